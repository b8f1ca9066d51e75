namespace Drydock.Runtime.Storage;

/// <summary>
/// The durable store under the runtime. Every guarantee of the runtime is a transaction or a predicate of an
/// implementation of this interface: ownership (owner + epoch), the turn (read, decide, write, consume in one
/// transaction), effect leases (owner + attempt), idempotency keys (a unique key).
/// Implementations: <c>PostgresRuntimeStore</c> (cluster) and <c>SqliteRuntimeStore</c> (embedded, one process).
/// </summary>
public interface IRuntimeStore : IAsyncDisposable
{
    /// <summary>Short provider name for logs and metrics: <c>postgresql</c> or <c>sqlite</c>.</summary>
    string ProviderName { get; }

    /// <summary>Wake-ups: LISTEN/NOTIFY on PostgreSQL, in-process on SQLite. Polling stays the fallback.</summary>
    RuntimeSignals Signals { get; }

    /// <summary>Applies the schema migrations this binary knows, once, under a lock; a no-op when current.</summary>
    /// <returns>The schema version after migrating.</returns>
    /// <exception cref="RuntimeSchemaTooNewException">The database was migrated by a newer binary.</exception>
    Task<int> MigrateAsync(CancellationToken cancellationToken = default);

    /// <summary>Starts background plumbing (the notification listener). Safe to call more than once.</summary>
    Task StartAsync(CancellationToken cancellationToken = default);

    /// <summary>Inserts a silo as active (or re-activates the id).</summary>
    Task RegisterSiloAsync(SiloRegistration registration, CancellationToken cancellationToken = default);

    /// <summary>Records a heartbeat. False if the silo is no longer active (it was declared dead or left).</summary>
    Task<bool> HeartbeatAsync(string siloId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Declares dead every active silo whose last heartbeat is older than <paramref name="timeout"/> on the store's
    /// clock, expires their grain leases and returns their running effects to the queue. Fencing stays with epochs
    /// and attempts: this only shortens the wait.
    /// </summary>
    /// <returns>The silos declared dead by this call.</returns>
    Task<IReadOnlyList<string>> DeclareDeadSilosAsync(TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>Marks a silo as left and releases its grains and effects.</summary>
    Task LeaveAsync(string siloId, CancellationToken cancellationToken = default);

    /// <summary>The membership table.</summary>
    Task<IReadOnlyList<SiloRecord>> ListSilosAsync(CancellationToken cancellationToken = default);

    /// <summary>Inserts messages (creating their grains' rows as needed), dropping those whose idempotency key was seen.</summary>
    /// <returns>One outcome per message, in order.</returns>
    Task<IReadOnlyList<EnqueueOutcome>> EnqueueAsync(IReadOnlyList<NewMessage> messages, CancellationToken cancellationToken = default);

    /// <summary>
    /// Claims up to <paramref name="max"/> grains of the given kinds that have a due message and whose lease is free or
    /// expired: owner becomes <paramref name="siloId"/>, epoch + 1, lease until now + <paramref name="lease"/>.
    /// Rows locked by others are skipped, not waited for.
    /// </summary>
    Task<IReadOnlyList<GrainLease>> ClaimGrainsAsync(string siloId, IReadOnlyCollection<string> kinds, int max, TimeSpan lease, CancellationToken cancellationToken = default);

    /// <summary>
    /// Runs one turn transaction: locks the grain row where owner and epoch still match the lease (else returns
    /// <see cref="TurnBatchStatus.Fenced"/> and writes nothing), reads up to <paramref name="maxMessages"/> due messages,
    /// calls <paramref name="processor"/>, writes state, outgoing messages, effects and replies, deletes the consumed
    /// messages, extends the lease, and releases it when no due message is left — all in one transaction.
    /// </summary>
    Task<TurnBatchResult> RunTurnAsync(GrainLease lease, int maxMessages, TimeSpan leaseDuration, int maxMessageAttempts, ITurnProcessor processor, CancellationToken cancellationToken = default);

    /// <summary>Gives up a lease if it still matches (owner and epoch). False if it did not match.</summary>
    Task<bool> ReleaseGrainAsync(GrainLease lease, CancellationToken cancellationToken = default);

    /// <summary>Time until the earliest message that is not yet due, or null if there is none.</summary>
    Task<TimeSpan?> GetTimeUntilNextDueAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Claims up to <paramref name="max"/> effects for <paramref name="host"/> that are pending and due, or running under
    /// an expired lease: owner becomes <paramref name="siloId"/>, attempt + 1.
    /// </summary>
    Task<IReadOnlyList<WorkItem>> ClaimWorkAsync(string siloId, string host, int max, TimeSpan lease, CancellationToken cancellationToken = default);

    /// <summary>Extends an effect's lease if the item still matches (owner and attempt). False if it was taken over.</summary>
    Task<bool> RenewWorkAsync(WorkItem item, TimeSpan lease, CancellationToken cancellationToken = default);

    /// <summary>
    /// Records the end of an effect if the item still matches (owner, attempt, running) and, in the same transaction,
    /// sends <paramref name="outcome"/> to the grain. False (nothing written) if the item was taken over: fenced.
    /// </summary>
    Task<bool> FinishWorkAsync(WorkItem item, WorkStatus status, string? error, NewMessage outcome, CancellationToken cancellationToken = default);

    /// <summary>Puts a failed attempt back in the queue after <paramref name="backoff"/>, if the item still matches.</summary>
    Task<bool> RetryWorkAsync(WorkItem item, TimeSpan backoff, string error, CancellationToken cancellationToken = default);

    /// <summary>Takes (reads and deletes) the reply to a request, if it was written.</summary>
    Task<StoredReply?> TakeReplyAsync(string requestId, CancellationToken cancellationToken = default);

    /// <summary>Reads a grain's row outside any turn.</summary>
    Task<GrainSnapshot?> GetGrainAsync(GrainId id, CancellationToken cancellationToken = default);

    /// <summary>Lists a kind's grains in key order, after <paramref name="afterKey"/> (keyset paging).</summary>
    Task<IReadOnlyList<GrainSnapshot>> ListGrainsAsync(string kind, string? afterKey, int limit, CancellationToken cancellationToken = default);

    /// <summary>The effects asked for by one grain.</summary>
    Task<IReadOnlyList<WorkRecord>> ListWorkAsync(GrainId grain, CancellationToken cancellationToken = default);

    /// <summary>The dead letters of one grain.</summary>
    Task<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(GrainId grain, CancellationToken cancellationToken = default);

    /// <summary>Messages in all inboxes (due or not) and effects not finished.</summary>
    Task<QueueDepth> GetQueueDepthAsync(CancellationToken cancellationToken = default);

    /// <summary>Deletes idempotency keys and unclaimed replies older than their retention.</summary>
    Task<int> PruneAsync(TimeSpan idempotencyRetention, TimeSpan replyRetention, CancellationToken cancellationToken = default);
}

/// <summary>Queue sizes for the queue-depth gauge.</summary>
/// <param name="Inbox">Messages in all inboxes.</param>
/// <param name="Work">Effects pending or running.</param>
public readonly record struct QueueDepth(long Inbox, long Work);
