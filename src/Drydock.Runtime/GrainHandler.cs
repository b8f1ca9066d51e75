using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Drydock.Runtime.Storage;

namespace Drydock.Runtime;

/// <summary>
/// The runtime's view of a handler: a kind, and a processor that applies the pure transition to stored rows.
/// Implement it by deriving from <see cref="GrainHandler{TState}"/>.
/// </summary>
public interface IGrainHandler
{
    /// <summary>The grain kind this handler runs.</summary>
    string Kind { get; }

    /// <summary>Builds the processor that turns stored rows into a <see cref="TurnOutput"/> for one transaction.</summary>
    ITurnProcessor CreateProcessor(MessageTypeRegistry messages, int defaultEffectAttempts);
}

/// <summary>
/// A grain's logic as a pure function: <c>Handle(state, message) → (state', messages, effects)</c>. No IO, no clock
/// (the store's clock comes in <see cref="TurnContext.Now"/>), no randomness: the same inputs give the same result,
/// so a turn can be retried after a failed commit and tested without a database.
/// </summary>
/// <typeparam name="TState">The state record, with a stable type name and schema version.</typeparam>
public abstract class GrainHandler<TState> : IGrainHandler
    where TState : class, IGrainState
{
    private readonly JsonTypeInfo<TState> _stateTypeInfo;

    /// <summary>Creates the handler for one kind.</summary>
    /// <param name="kind">The grain kind (see <see cref="GrainId.Kind"/>).</param>
    /// <param name="stateTypeInfo">The (source-generated) JSON contract of the state.</param>
    protected GrainHandler(string kind, JsonTypeInfo<TState> stateTypeInfo)
    {
        _ = new GrainId(kind, "validate");
        Kind = kind;
        _stateTypeInfo = stateTypeInfo ?? throw new ArgumentNullException(nameof(stateTypeInfo));
    }

    /// <inheritdoc/>
    public string Kind { get; }

    /// <summary>The state of a grain that has never completed a turn.</summary>
    public abstract TState CreateInitial(GrainId id);

    /// <summary>The transition. Throwing makes the runtime retry the message, then dead-letter it.</summary>
    public abstract TurnResult<TState> Handle(TState state, GrainEnvelope envelope, TurnContext context);

    /// <summary>Turns state stored at an older schema version into the current record. The default refuses.</summary>
    /// <exception cref="GrainSchemaVersionException">Always, unless overridden.</exception>
    public virtual TState UpgradeState(int storedVersion, JsonElement state)
        => throw new GrainSchemaVersionException(TState.TypeName, storedVersion, TState.SchemaVersion);

    /// <inheritdoc/>
    public ITurnProcessor CreateProcessor(MessageTypeRegistry messages, int defaultEffectAttempts)
        => new Processor(this, messages, defaultEffectAttempts);

    private TState LoadState(TurnInput input)
    {
        if (input.StateJson is null)
        {
            return CreateInitial(input.Grain);
        }

        if (input.StateType is not null && input.StateType != TState.TypeName)
        {
            throw new UnknownGrainTypeException(input.StateType, "state");
        }

        if (input.SchemaVersion == TState.SchemaVersion)
        {
            return JsonSerializer.Deserialize(input.StateJson, _stateTypeInfo)
                ?? throw new GrainRuntimeException($"The state of {input.Grain} is JSON null.");
        }

        if (input.SchemaVersion > TState.SchemaVersion)
        {
            throw new GrainSchemaVersionException(TState.TypeName, input.SchemaVersion, TState.SchemaVersion);
        }

        using var document = JsonDocument.Parse(input.StateJson);
        return UpgradeState(input.SchemaVersion, document.RootElement);
    }

    private sealed class Processor(GrainHandler<TState> handler, MessageTypeRegistry messages, int defaultEffectAttempts) : ITurnProcessor
    {
        public TurnOutput Process(TurnInput input)
        {
            // A state that cannot be loaded is a deployment problem, not a message problem: fail the whole
            // transaction (the store rolls back) instead of dead-lettering every message of the grain.
            var state = handler.LoadState(input);
            var consumed = new List<long>(input.Messages.Count);
            var outgoing = new List<NewMessage>();
            var effects = new List<NewEffect>();
            var replies = new List<StoredReply>();
            FailedMessage? failure = null;
            var version = input.Version;

            foreach (var row in input.Messages)
            {
                object message;
                try
                {
                    message = messages.Deserialize(row.TypeName, row.TypeVersion, row.Body);
                }
                catch (Exception ex) when (ex is GrainRuntimeException or JsonException)
                {
                    failure = new FailedMessage(row.Id, ex.Message, Permanent: true);
                    break;
                }

                var envelope = new GrainEnvelope(message, row.Id, row.TypeName, row.EnqueuedAt, row.IdempotencyKey, row.ReplyTo is not null, row.Attempts + 1);
                var context = new TurnContext(input.Grain, version, input.Now);
                TurnResult<TState> result;
                List<NewMessage> turnOutgoing;
                List<NewEffect> turnEffects;
                StoredReply? reply;
                try
                {
                    result = handler.Handle(state, envelope, context);
                    ArgumentNullException.ThrowIfNull(result);
                    ArgumentNullException.ThrowIfNull(result.State);
                    turnOutgoing = [.. result.Messages.Select(Serialize)];
                    turnEffects = [.. result.Effects.Select((e, i) => Serialize(e, input.Grain, version + 1, i))];
                    reply = row.ReplyTo is null ? null : SerializeReply(row.ReplyTo, result.Reply);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    failure = new FailedMessage(row.Id, $"{ex.GetType().Name}: {ex.Message}", Permanent: false);
                    break;
                }

                state = result.State;
                version++;
                consumed.Add(row.Id);
                outgoing.AddRange(turnOutgoing);
                effects.AddRange(turnEffects);
                if (reply is not null)
                {
                    replies.Add(reply);
                }
            }

            return new TurnOutput
            {
                StateJson = consumed.Count == 0 ? input.StateJson : JsonSerializer.Serialize(state, handler._stateTypeInfo),
                StateType = consumed.Count == 0 ? input.StateType : TState.TypeName,
                SchemaVersion = consumed.Count == 0 ? input.SchemaVersion : TState.SchemaVersion,
                Consumed = consumed,
                Outgoing = outgoing,
                Effects = effects,
                Replies = replies,
                Failure = failure,
            };
        }

        private NewMessage Serialize(OutgoingMessage message)
        {
            var body = messages.Serialize(message.Message);
            return new NewMessage(message.Target, body.TypeName, body.TypeVersion, body.Json)
            {
                Delay = message.Delay,
                DueAt = message.DueAt,
                IdempotencyKey = message.IdempotencyKey,
            };
        }

        private NewEffect Serialize(EffectRequest effect, GrainId grain, long version, int index)
        {
            ArgumentException.ThrowIfNullOrEmpty(effect.Host);
            var body = messages.Serialize(effect.Payload);
            // Derived ids are a function of the turn's inputs, so a retried turn asks for the same effect again
            // and the work queue's primary key keeps it once.
            var id = effect.EffectId ?? $"{grain.Kind}/{grain.Key}/{version}/{index}";
            return new NewEffect(id, effect.Host, body.TypeName, body.TypeVersion, body.Json, effect.MaxAttempts ?? defaultEffectAttempts);
        }

        private StoredReply SerializeReply(string requestId, object? reply)
        {
            if (reply is null)
            {
                return new StoredReply(requestId, null, 0, null, null);
            }

            var body = messages.Serialize(reply);
            return new StoredReply(requestId, body.TypeName, body.TypeVersion, body.Json, null);
        }
    }
}
