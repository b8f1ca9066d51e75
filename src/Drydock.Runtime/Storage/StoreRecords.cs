namespace Drydock.Runtime.Storage;

/// <summary>A message to insert into a grain's inbox.</summary>
/// <param name="Target">The receiving grain.</param>
/// <param name="TypeName">Stable type name.</param>
/// <param name="TypeVersion">Version of the JSON shape.</param>
/// <param name="Body">The JSON body.</param>
public sealed record NewMessage(GrainId Target, string TypeName, int TypeVersion, string Body)
{
    /// <summary>Absolute due time; wins over <see cref="Delay"/>. Null with a null delay: due now.</summary>
    public DateTimeOffset? DueAt { get; init; }

    /// <summary>Delay from the store's clock at commit.</summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>Optional idempotency key, unique per target grain for the retention window.</summary>
    public string? IdempotencyKey { get; init; }

    /// <summary>Request id when the sender waits for a reply.</summary>
    public string? ReplyTo { get; init; }

    /// <summary>True if it is due immediately (no delay, no due time).</summary>
    public bool DueNow => DueAt is null && (Delay is null || Delay <= TimeSpan.Zero);
}

/// <summary>Whether an enqueue inserted a row or found the idempotency key already used.</summary>
public enum EnqueueOutcome
{
    /// <summary>A new inbox row was inserted.</summary>
    Accepted = 1,

    /// <summary>The idempotency key was seen before for this grain: nothing inserted.</summary>
    Duplicate = 2,
}

/// <summary>A message read from an inbox inside a turn transaction.</summary>
public sealed record StoredMessage(
    long Id,
    string TypeName,
    int TypeVersion,
    string Body,
    DateTimeOffset EnqueuedAt,
    string? IdempotencyKey,
    string? ReplyTo,
    int Attempts);

/// <summary>An effect to insert into the work queue; ignored if its id exists already.</summary>
public sealed record NewEffect(string EffectId, string Host, string TypeName, int TypeVersion, string Body, int MaxAttempts);

/// <summary>A reply to a request, written in the turn that handled it.</summary>
/// <param name="RequestId">The caller's request id.</param>
/// <param name="TypeName">Type of the reply body; null when the handler gave none.</param>
/// <param name="TypeVersion">Version of the reply body.</param>
/// <param name="Body">JSON body; null when the handler gave none.</param>
/// <param name="Error">Set when the request was dead-lettered instead of handled.</param>
public sealed record StoredReply(string RequestId, string? TypeName, int TypeVersion, string? Body, string? Error);

/// <summary>Ownership of one grain by one silo, valid while the store has the same owner and epoch.</summary>
/// <param name="Grain">The grain.</param>
/// <param name="SiloId">The owning silo.</param>
/// <param name="Epoch">The fencing token: every claim raises it by one.</param>
/// <param name="PreviousOwner">Who held the expired lease before this claim (null if it was released): a takeover.</param>
public sealed record GrainLease(GrainId Grain, string SiloId, long Epoch, string? PreviousOwner);

/// <summary>What the store hands the processor inside the turn transaction.</summary>
/// <param name="Grain">The grain.</param>
/// <param name="StateJson">Current state, null for a grain never turned.</param>
/// <param name="StateType">Stored state type name, if any.</param>
/// <param name="SchemaVersion">Stored state schema version.</param>
/// <param name="Version">Current version (number of committed turns).</param>
/// <param name="Messages">Due messages in FIFO order.</param>
/// <param name="Now">The store's clock.</param>
public sealed record TurnInput(
    GrainId Grain,
    string? StateJson,
    string? StateType,
    int SchemaVersion,
    long Version,
    IReadOnlyList<StoredMessage> Messages,
    DateTimeOffset Now);

/// <summary>What the processor decided for the messages of one transaction.</summary>
public sealed record TurnOutput
{
    /// <summary>New state JSON (unchanged if no message was consumed).</summary>
    public required string? StateJson { get; init; }

    /// <summary>State type name.</summary>
    public required string? StateType { get; init; }

    /// <summary>State schema version.</summary>
    public required int SchemaVersion { get; init; }

    /// <summary>Messages handled in order; each raises the version by one.</summary>
    public required IReadOnlyList<long> Consumed { get; init; }

    /// <summary>Messages to insert.</summary>
    public IReadOnlyList<NewMessage> Outgoing { get; init; } = [];

    /// <summary>Effects to insert.</summary>
    public IReadOnlyList<NewEffect> Effects { get; init; } = [];

    /// <summary>Replies to insert.</summary>
    public IReadOnlyList<StoredReply> Replies { get; init; } = [];

    /// <summary>The message the handler failed on (it stops the batch), if any.</summary>
    public FailedMessage? Failure { get; init; }
}

/// <summary>A message the handler threw on.</summary>
/// <param name="MessageId">The inbox row.</param>
/// <param name="Error">What went wrong.</param>
/// <param name="Permanent">True when retrying cannot help (unknown type, newer version): dead-letter at once.</param>
public sealed record FailedMessage(long MessageId, string Error, bool Permanent);

/// <summary>Applies handlers to messages; runs inside the store's turn transaction, so it must be pure and fast.</summary>
public interface ITurnProcessor
{
    /// <summary>Decides the turn(s) for the given state and messages.</summary>
    TurnOutput Process(TurnInput input);
}

/// <summary>How a turn transaction ended.</summary>
public enum TurnBatchStatus
{
    /// <summary>The transaction committed (it may have consumed zero messages if none were due).</summary>
    Committed = 1,

    /// <summary>The grain is no longer ours (owner or epoch changed): nothing was written.</summary>
    Fenced = 2,
}

/// <summary>The outcome of one turn transaction.</summary>
/// <param name="Status">Committed or fenced.</param>
/// <param name="Processed">Messages consumed (handled, or dead-lettered).</param>
/// <param name="Released">True if the inbox had no due message left and the lease was given up in the same transaction.</param>
/// <param name="Version">The grain version after the commit.</param>
/// <param name="DeadLettered">Messages moved to the dead letters in this transaction.</param>
public sealed record TurnBatchResult(TurnBatchStatus Status, int Processed, bool Released, long Version, int DeadLettered);

/// <summary>A claimed effect.</summary>
public sealed record WorkItem(
    string EffectId,
    GrainId Grain,
    string Host,
    string TypeName,
    int TypeVersion,
    string Body,
    int Attempt,
    int MaxAttempts,
    string SiloId,
    DateTimeOffset CreatedAt);

/// <summary>How an effect ended, as recorded in the work queue.</summary>
public enum WorkStatus
{
    /// <summary>Waiting for a worker (or for its retry time).</summary>
    Pending = 1,

    /// <summary>Claimed by a worker under a lease.</summary>
    Running = 2,

    /// <summary>Completed; <see cref="EffectCompleted"/> was sent.</summary>
    Completed = 3,

    /// <summary>Failed for good; <see cref="EffectFailed"/> was sent.</summary>
    Failed = 4,
}

/// <summary>A row of the work queue, for queries and tests.</summary>
public sealed record WorkRecord(
    string EffectId,
    GrainId Grain,
    string Host,
    string TypeName,
    WorkStatus Status,
    int Attempt,
    int MaxAttempts,
    string? Owner,
    string? Error);

/// <summary>A grain's durable row, read outside any turn.</summary>
public sealed record GrainSnapshot(
    GrainId Id,
    string? StateJson,
    string? StateType,
    int SchemaVersion,
    long Version,
    string? Owner,
    long Epoch,
    DateTimeOffset? LeaseUntil,
    DateTimeOffset UpdatedAt);

/// <summary>A message the handler could not process within its attempts.</summary>
public sealed record DeadLetter(long Id, GrainId Grain, string TypeName, string Body, string Error, int Attempts, DateTimeOffset FailedAt);

/// <summary>What a silo does.</summary>
[Flags]
public enum SiloRole
{
    /// <summary>Runs grain turns.</summary>
    Controller = 1,

    /// <summary>Runs effects for one hypervisor host.</summary>
    Worker = 2,

    /// <summary>Both (the embedded mode).</summary>
    Both = Controller | Worker,
}

/// <summary>A silo joining the cluster.</summary>
public sealed record SiloRegistration(string SiloId, SiloRole Role, string? HypervisorHost, string Machine, int ProcessId);

/// <summary>Membership status of a silo.</summary>
public enum SiloStatus
{
    /// <summary>Heartbeating.</summary>
    Active = 1,

    /// <summary>Left cleanly.</summary>
    Left = 2,

    /// <summary>Declared dead by another silo after missed heartbeats.</summary>
    Dead = 3,
}

/// <summary>A row of the membership table.</summary>
public sealed record SiloRecord(
    string SiloId,
    SiloRole Role,
    string? HypervisorHost,
    string Machine,
    int ProcessId,
    SiloStatus Status,
    DateTimeOffset StartedAt,
    DateTimeOffset HeartbeatAt);

/// <summary>A wake-up channel of the store.</summary>
public enum SignalKind
{
    /// <summary>A message became due now.</summary>
    Inbox = 1,

    /// <summary>An effect was queued or retried.</summary>
    Work = 2,

    /// <summary>A reply was written.</summary>
    Reply = 3,
}
