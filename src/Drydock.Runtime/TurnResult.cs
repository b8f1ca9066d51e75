namespace Drydock.Runtime;

/// <summary>
/// What one turn decided: the grain's next state, the messages it sends, the effects it asks workers to run,
/// and the reply to the caller when the message was a request. Immutable; build it with the fluent methods.
/// </summary>
/// <typeparam name="TState">The grain's state record.</typeparam>
/// <param name="State">The state after the turn.</param>
public sealed record TurnResult<TState>(TState State)
    where TState : class
{
    /// <summary>Messages to other grains (or to this one), committed with the turn.</summary>
    public IReadOnlyList<OutgoingMessage> Messages { get; init; } = [];

    /// <summary>Effects for hypervisor-host workers, committed with the turn.</summary>
    public IReadOnlyList<EffectRequest> Effects { get; init; } = [];

    /// <summary>The reply to a request/response call; ignored when the message was not a request.</summary>
    public object? Reply { get; init; }

    /// <summary>Adds a message to <paramref name="target"/>, due now or after <paramref name="delay"/>.</summary>
    /// <param name="target">The grain that receives it.</param>
    /// <param name="message">A registered message record.</param>
    /// <param name="delay">Delivery delay measured on the store's clock; null for now.</param>
    /// <param name="idempotencyKey">Optional key: a second message with the same key to the same grain is dropped.</param>
    public TurnResult<TState> Send(GrainId target, object message, TimeSpan? delay = null, string? idempotencyKey = null)
        => this with { Messages = [.. Messages, new OutgoingMessage(target, message) { Delay = delay, IdempotencyKey = idempotencyKey }] };

    /// <summary>Adds a message to <paramref name="target"/> due at an absolute time (a schedule).</summary>
    public TurnResult<TState> Schedule(GrainId target, object message, DateTimeOffset dueAt, string? idempotencyKey = null)
        => this with { Messages = [.. Messages, new OutgoingMessage(target, message) { DueAt = dueAt, IdempotencyKey = idempotencyKey }] };

    /// <summary>Adds an effect for the worker of <paramref name="host"/>.</summary>
    /// <param name="host">The hypervisor host whose worker silo runs it.</param>
    /// <param name="payload">A registered payload record; its type name selects the executor.</param>
    /// <param name="effectId">A stable id, or null to derive one from the grain, its version and the effect's position.</param>
    /// <param name="maxAttempts">Attempts before <see cref="EffectFailed"/>; null for the runtime default.</param>
    public TurnResult<TState> Effect(string host, object payload, string? effectId = null, int? maxAttempts = null)
        => this with { Effects = [.. Effects, new EffectRequest(host, payload) { EffectId = effectId, MaxAttempts = maxAttempts }] };

    /// <summary>Sets the reply to the caller.</summary>
    public TurnResult<TState> WithReply(object reply) => this with { Reply = reply };
}

/// <summary>Factory for <see cref="TurnResult{TState}"/>.</summary>
public static class TurnResult
{
    /// <summary>A result with the given state and nothing else.</summary>
    public static TurnResult<TState> Of<TState>(TState state)
        where TState : class
        => new(state);
}

/// <summary>A message sent by a turn.</summary>
/// <param name="Target">The receiving grain.</param>
/// <param name="Message">A registered message record.</param>
public sealed record OutgoingMessage(GrainId Target, object Message)
{
    /// <summary>Delivery delay on the store's clock; null for now.</summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>Absolute due time; wins over <see cref="Delay"/>.</summary>
    public DateTimeOffset? DueAt { get; init; }

    /// <summary>Optional idempotency key, unique per target grain.</summary>
    public string? IdempotencyKey { get; init; }
}

/// <summary>An effect asked for by a turn: work for the worker silo of one hypervisor host.</summary>
/// <param name="Host">The hypervisor host.</param>
/// <param name="Payload">A registered payload record.</param>
public sealed record EffectRequest(string Host, object Payload)
{
    /// <summary>Stable id; derived from grain, version and position when null.</summary>
    public string? EffectId { get; init; }

    /// <summary>Attempts before failing; null for <c>GrainRuntimeOptions.EffectMaxAttempts</c>.</summary>
    public int? MaxAttempts { get; init; }
}

/// <summary>A delivered message with its metadata.</summary>
/// <param name="Message">The deserialized message record.</param>
/// <param name="MessageId">The inbox row id (increasing per store).</param>
/// <param name="TypeName">The stored type name.</param>
/// <param name="EnqueuedAt">When it was enqueued, on the store's clock.</param>
/// <param name="IdempotencyKey">The key it was sent with, if any.</param>
/// <param name="ExpectsReply">True if the sender waits for <see cref="TurnResult{TState}.Reply"/>.</param>
/// <param name="Attempt">1 on first delivery; higher after the handler threw on it.</param>
public sealed record GrainEnvelope(
    object Message,
    long MessageId,
    string TypeName,
    DateTimeOffset EnqueuedAt,
    string? IdempotencyKey,
    bool ExpectsReply,
    int Attempt);

/// <summary>What a handler may know besides state and message: who it is, its version, and the store's clock.</summary>
/// <param name="Self">This grain.</param>
/// <param name="Version">The state version before this turn (0 for a new grain).</param>
/// <param name="Now">The store's clock at the start of the transaction.</param>
public readonly record struct TurnContext(GrainId Self, long Version, DateTimeOffset Now);
