using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Drydock.Runtime.Storage;

namespace Drydock.Runtime.Client;

/// <summary>Options of a <see cref="GrainClient"/>.</summary>
public sealed class GrainClientOptions
{
    /// <summary>Timeout of <see cref="GrainClient.CallAsync{TReply}"/> when the call does not give one. Default 30 seconds.</summary>
    public TimeSpan DefaultCallTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Longest wait between two looks for a reply when no notification arrives. Default 250 ms.</summary>
    public TimeSpan ReplyPollInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>
/// The way in from outside a turn (API, CLI, dashboard): send messages, call a grain and wait for its reply, and read
/// grain state. Reads never go through a turn: they see the last committed state.
/// </summary>
public sealed class GrainClient
{
    private readonly IRuntimeStore _store;
    private readonly MessageTypeRegistry _messages;
    private readonly TimeProvider _timeProvider;
    private readonly GrainClientOptions _options;

    /// <summary>Creates a client over a store.</summary>
    public GrainClient(IRuntimeStore store, MessageTypeRegistry messages, TimeProvider timeProvider, GrainClientOptions? options = null)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _messages = messages ?? throw new ArgumentNullException(nameof(messages));
        _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _options = options ?? new GrainClientOptions();
    }

    /// <summary>Sends one message.</summary>
    /// <param name="target">The receiving grain.</param>
    /// <param name="message">A registered message record.</param>
    /// <param name="idempotencyKey">Optional key: the same key to the same grain is accepted once.</param>
    /// <param name="delay">Optional delivery delay (a timer), on the store's clock.</param>
    /// <param name="cancellationToken">Cancels the send.</param>
    /// <returns>Accepted, or Duplicate when the key was used before.</returns>
    public async Task<EnqueueOutcome> SendAsync(GrainId target, object message, string? idempotencyKey = null, TimeSpan? delay = null, CancellationToken cancellationToken = default)
    {
        var results = await SendManyAsync([new OutgoingMessage(target, message) { IdempotencyKey = idempotencyKey, Delay = delay }], cancellationToken);
        return results[0];
    }

    /// <summary>Sends several messages in one transaction (all or none), in order.</summary>
    public Task<IReadOnlyList<EnqueueOutcome>> SendManyAsync(IReadOnlyList<OutgoingMessage> messages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return _store.EnqueueAsync([.. messages.Select(ToNewMessage)], cancellationToken);
    }

    /// <summary>
    /// Sends a request and waits for the grain's reply (<see cref="TurnResult{TState}.Reply"/>).
    /// </summary>
    /// <exception cref="GrainCallTimeoutException">No reply within the timeout; the request may still be handled later.</exception>
    /// <exception cref="GrainCallFailedException">The handler failed on the request until it was dead-lettered, or gave no reply.</exception>
    public async Task<TReply> CallAsync<TReply>(GrainId target, object request, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        where TReply : IGrainMessage
    {
        ArgumentNullException.ThrowIfNull(request);
        await _store.StartAsync(cancellationToken);
        var requestId = Guid.NewGuid().ToString("N", CultureInfo.InvariantCulture);
        var body = _messages.Serialize(request);
        await _store.EnqueueAsync([new NewMessage(target, body.TypeName, body.TypeVersion, body.Json) { ReplyTo = requestId }], cancellationToken);
        var limit = timeout ?? _options.DefaultCallTimeout;
        var started = _timeProvider.GetTimestamp();
        while (true)
        {
            var pulse = _store.Signals.Reply.NextPulse;
            var reply = await _store.TakeReplyAsync(requestId, cancellationToken);
            if (reply is not null)
            {
                if (reply.Error is not null)
                {
                    throw new GrainCallFailedException(target, requestId, reply.Error);
                }

                if (reply.TypeName is null || reply.Body is null)
                {
                    throw new GrainCallFailedException(target, requestId, "the handler gave no reply");
                }

                return _messages.Deserialize<TReply>(reply.TypeName, reply.TypeVersion, reply.Body);
            }

            var left = limit - _timeProvider.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                throw new GrainCallTimeoutException(target, requestId, limit);
            }

            await AsyncSignal.WaitAsync(pulse, left < _options.ReplyPollInterval ? left : _options.ReplyPollInterval, _timeProvider, cancellationToken);
        }
    }

    /// <summary>Reads a grain's last committed row, or null if the grain was never sent a message.</summary>
    public Task<GrainSnapshot?> GetAsync(GrainId id, CancellationToken cancellationToken = default) => _store.GetGrainAsync(id, cancellationToken);

    /// <summary>Reads a grain's last committed state as <typeparamref name="TState"/>; null if it has none yet.</summary>
    /// <exception cref="GrainSchemaVersionException">The stored state has another schema version.</exception>
    public async Task<TState?> GetStateAsync<TState>(GrainId id, JsonTypeInfo<TState> typeInfo, CancellationToken cancellationToken = default)
        where TState : class, IGrainState
    {
        var snapshot = await _store.GetGrainAsync(id, cancellationToken);
        if (snapshot?.StateJson is null)
        {
            return null;
        }

        if (snapshot.StateType != TState.TypeName)
        {
            throw new UnknownGrainTypeException(snapshot.StateType ?? "(none)", "state");
        }

        if (snapshot.SchemaVersion != TState.SchemaVersion)
        {
            throw new GrainSchemaVersionException(TState.TypeName, snapshot.SchemaVersion, TState.SchemaVersion);
        }

        return JsonSerializer.Deserialize(snapshot.StateJson, typeInfo);
    }

    /// <summary>Lists a kind's grains in key order (keyset paging: pass the last key seen).</summary>
    public Task<IReadOnlyList<GrainSnapshot>> ListAsync(string kind, string? afterKey = null, int limit = 100, CancellationToken cancellationToken = default)
        => _store.ListGrainsAsync(kind, afterKey, limit, cancellationToken);

    private NewMessage ToNewMessage(OutgoingMessage message)
    {
        var body = _messages.Serialize(message.Message);
        return new NewMessage(message.Target, body.TypeName, body.TypeVersion, body.Json)
        {
            IdempotencyKey = message.IdempotencyKey,
            Delay = message.Delay,
            DueAt = message.DueAt,
        };
    }
}
