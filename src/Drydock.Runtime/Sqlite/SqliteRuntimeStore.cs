using System.Globalization;
using System.Threading.Channels;
using System.Text.Json;
using Drydock.Runtime.Serialization;
using Drydock.Runtime.Storage;
using Microsoft.Data.Sqlite;

namespace Drydock.Runtime.Sqlite;

/// <summary>
/// The embedded store: one SQLite file in WAL mode, used by a single process that runs every role. Writes go
/// through one connection under an in-process lock (SQLite has one writer anyway); the fencing predicates are the
/// same SQL as on PostgreSQL, so a stale lease is rejected by the statement, not by the lock.
/// </summary>
public sealed class SqliteRuntimeStore : IRuntimeStore
{
    private readonly SqliteRuntimeStoreOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly string _connectionString;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Channel<TurnRequest> _turns = Channel.CreateUnbounded<TurnRequest>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Lock _writerStart = new();
    private Task? _turnWriter;
    private SqliteConnection? _writer;
    private bool _disposed;

    /// <summary>Creates the store; nothing is opened until the first call.</summary>
    public SqliteRuntimeStore(SqliteRuntimeStoreOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.DatabasePath);
        _options = options;
        _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = options.DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds),
        }.ToString();
    }

    /// <inheritdoc/>
    public string ProviderName => "sqlite";

    /// <inheritdoc/>
    public RuntimeSignals Signals { get; } = new();

    /// <summary>The latest schema version this binary knows.</summary>
    public static int LatestSchemaVersion => SqliteMigrations.All[^1].Version;

    /// <inheritdoc/>
    public Task StartAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;

    /// <inheritdoc/>
    public async Task<int> MigrateAsync(CancellationToken cancellationToken = default)
    {
        return await WriteAsync(
            async (connection, transaction, _) =>
            {
                await ExecuteAsync(connection, transaction, "CREATE TABLE IF NOT EXISTS runtime_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)", cancellationToken);
                var current = Convert.ToInt32(await ScalarAsync(connection, transaction, "SELECT coalesce(max(version), 0) FROM runtime_schema", cancellationToken) ?? 0L, CultureInfo.InvariantCulture);
                if (current > LatestSchemaVersion)
                {
                    throw new RuntimeSchemaTooNewException(current, LatestSchemaVersion);
                }

                foreach (var migration in SqliteMigrations.All.Where(m => m.Version > current))
                {
                    await ExecuteAsync(connection, transaction, migration.Sql, cancellationToken);
                    await ExecuteAsync(
                        connection,
                        transaction,
                        "INSERT INTO runtime_schema (version, description, applied_at) VALUES ($v, $d, $t)",
                        cancellationToken,
                        ("$v", migration.Version),
                        ("$d", migration.Description),
                        ("$t", NowMs()));
                    current = migration.Version;
                }

                return current;
            },
            cancellationToken);
    }

    /// <inheritdoc/>
    public Task RegisterSiloAsync(SiloRegistration registration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(registration);
        return WriteAsync(
            async (c, t, _) =>
            {
                var now = NowMs();
                await ExecuteAsync(
                    c,
                    t,
                    """
                    INSERT INTO silos (silo_id, role, hypervisor_host, machine, process_id, status, started_at, heartbeat_at)
                    VALUES ($id, $role, $host, $machine, $pid, 1, $now, $now)
                    ON CONFLICT (silo_id) DO UPDATE SET status = 1, role = $role, hypervisor_host = $host, heartbeat_at = $now
                    """,
                    cancellationToken,
                    ("$id", registration.SiloId),
                    ("$role", (int)registration.Role),
                    ("$host", registration.HypervisorHost),
                    ("$machine", registration.Machine),
                    ("$pid", registration.ProcessId),
                    ("$now", now));
                return 0;
            },
            cancellationToken);
    }

    /// <inheritdoc/>
    public Task<bool> HeartbeatAsync(string siloId, CancellationToken cancellationToken = default)
        => WriteAsync(
            async (c, t, _) => await ExecuteAsync(c, t, "UPDATE silos SET heartbeat_at = $now WHERE silo_id = $id AND status = 1", cancellationToken, ("$now", NowMs()), ("$id", siloId)) == 1,
            cancellationToken);

    /// <inheritdoc/>
    public Task<IReadOnlyList<string>> DeclareDeadSilosAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
        => WriteAsync<IReadOnlyList<string>>(
            async (c, t, _) =>
            {
                var now = NowMs();
                var dead = new List<string>();
                await using (var command = Command(c, t, "UPDATE silos SET status = 3 WHERE status = 1 AND heartbeat_at < $cutoff RETURNING silo_id", ("$cutoff", now - (long)timeout.TotalMilliseconds)))
                await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
                {
                    while (await reader.ReadAsync(cancellationToken))
                    {
                        dead.Add(reader.GetString(0));
                    }
                }

                foreach (var silo in dead)
                {
                    await ExecuteAsync(c, t, "UPDATE grains SET lease_until = $past WHERE owner = $s", cancellationToken, ("$past", now - 1), ("$s", silo));
                    await ExecuteAsync(c, t, "UPDATE work SET lease_until = $past WHERE owner = $s AND status = 2", cancellationToken, ("$past", now - 1), ("$s", silo));
                }

                return dead;
            },
            cancellationToken);

    /// <inheritdoc/>
    public Task LeaveAsync(string siloId, CancellationToken cancellationToken = default)
        => WriteAsync(
            async (c, t, _) =>
            {
                await ExecuteAsync(c, t, "UPDATE silos SET status = 2 WHERE silo_id = $s", cancellationToken, ("$s", siloId));
                await ExecuteAsync(c, t, "UPDATE grains SET owner = NULL, lease_until = NULL WHERE owner = $s", cancellationToken, ("$s", siloId));
                await ExecuteAsync(c, t, "UPDATE work SET status = 1, owner = NULL, lease_until = NULL WHERE owner = $s AND status = 2", cancellationToken, ("$s", siloId));
                return 0;
            },
            cancellationToken);

    /// <inheritdoc/>
    public async Task<IReadOnlyList<SiloRecord>> ListSilosAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, null, "SELECT silo_id, role, hypervisor_host, machine, process_id, status, started_at, heartbeat_at FROM silos ORDER BY started_at, silo_id");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<SiloRecord>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new SiloRecord(
                reader.GetString(0),
                (SiloRole)reader.GetInt32(1),
                reader.GetStringOrNull(2),
                reader.GetString(3),
                reader.GetInt32(4),
                (SiloStatus)reader.GetInt32(5),
                FromMs(reader.GetInt64(6)),
                FromMs(reader.GetInt64(7))));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<EnqueueOutcome>> EnqueueAsync(IReadOnlyList<NewMessage> messages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var outcomes = await WriteAsync<IReadOnlyList<EnqueueOutcome>>(
            async (c, t, _) =>
            {
                var now = NowMs();
                var result = new List<EnqueueOutcome>(messages.Count);
                foreach (var message in messages)
                {
                    result.Add(await InsertMessageAsync(c, t, message, now, cancellationToken));
                }

                return result;
            },
            cancellationToken);
        if (messages.Any(m => m.DueNow))
        {
            Signals.Inbox.Pulse();
        }

        return outcomes;
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<GrainLease>> ClaimGrainsAsync(string siloId, IReadOnlyCollection<string> kinds, int max, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        if (max <= 0 || kinds.Count == 0)
        {
            return Task.FromResult<IReadOnlyList<GrainLease>>([]);
        }

        return WriteAsync<IReadOnlyList<GrainLease>>(
            async (c, t, _) =>
            {
                var now = NowMs();
                var candidates = new List<(string Kind, string Key, string? Owner)>();
                var seen = new HashSet<(string, string)>();
                await using (var command = Command(
                    c,
                    t,
                    """
                    SELECT i.kind, i.key, g.owner FROM inbox i JOIN grains g ON g.kind = i.kind AND g.key = i.key
                    WHERE i.due_at <= $now AND (g.owner IS NULL OR g.lease_until < $now)
                      AND g.kind IN (SELECT value FROM json_each($kinds))
                      AND EXISTS (SELECT 1 FROM silos WHERE silo_id = $me AND status = 1)
                    ORDER BY i.due_at, i.id
                    """,
                    ("$now", now),
                    ("$kinds", JsonSerializer.Serialize(kinds.ToArray(), StoreJsonContext.Default.StringArray)),
                    ("$me", siloId)))
                await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
                {
                    // Rows stream in due order; one grain's backlog only costs stepping over its rows, it cannot
                    // hide the grains behind it.
                    while (candidates.Count < max && await reader.ReadAsync(cancellationToken))
                    {
                        var kind = reader.GetString(0);
                        var key = reader.GetString(1);
                        if (seen.Add((kind, key)))
                        {
                            candidates.Add((kind, key, reader.GetStringOrNull(2)));
                        }
                    }
                }

                var leases = new List<GrainLease>(candidates.Count);
                foreach (var (kind, key, owner) in candidates)
                {
                    var epoch = await ScalarAsync(
                        c,
                        t,
                        """
                        UPDATE grains SET owner = $me, epoch = epoch + 1, lease_until = $until
                        WHERE kind = $k AND key = $key AND (owner IS NULL OR lease_until < $now) RETURNING epoch
                        """,
                        cancellationToken,
                        ("$me", siloId),
                        ("$until", now + (long)lease.TotalMilliseconds),
                        ("$k", kind),
                        ("$key", key),
                        ("$now", now));
                    if (epoch is long e)
                    {
                        leases.Add(new GrainLease(new GrainId(kind, key), siloId, e, owner));
                    }
                }

                return leases;
            },
            cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<TurnBatchResult> RunTurnAsync(GrainLease lease, int maxMessages, TimeSpan leaseDuration, int maxMessageAttempts, ITurnProcessor processor, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ArgumentNullException.ThrowIfNull(processor);
        ObjectDisposedException.ThrowIf(_disposed, this);
        cancellationToken.ThrowIfCancellationRequested();
        EnsureTurnWriter();
        var request = new TurnRequest(lease, maxMessages, leaseDuration, maxMessageAttempts, processor, cancellationToken);
        ObjectDisposedException.ThrowIf(!_turns.Writer.TryWrite(request), this);

        // Not cancellable once queued: the writer either skips a cancelled request or runs it to the end.
        return await request.Completion.Task;
    }

    private void EnsureTurnWriter()
    {
        lock (_writerStart)
        {
            _turnWriter ??= Task.Run(TurnWriterLoopAsync, CancellationToken.None);
        }
    }

    // Group commit: every turn waiting when the writer comes round runs in ONE SQLite transaction, each inside
    // its own savepoint (a turn that throws rolls back only itself). Each turn still locks nothing but its own
    // row's predicates; SQLite's single writer makes them sequential, and the commit's fsync is shared.
    private async Task TurnWriterLoopAsync()
    {
        var reader = _turns.Reader;
        var batch = new List<TurnRequest>(MaxTurnsPerCommit);
        while (await reader.WaitToReadAsync())
        {
            batch.Clear();
            while (batch.Count < MaxTurnsPerCommit && reader.TryRead(out var request))
            {
                if (request.CancellationToken.IsCancellationRequested)
                {
                    request.Completion.TrySetCanceled(request.CancellationToken);
                }
                else
                {
                    batch.Add(request);
                }
            }

            if (batch.Count == 0)
            {
                continue;
            }

            var outcomes = new (TurnBatchResult? Result, Exception? Error, SignalSet Pulses)[batch.Count];
            try
            {
                await _writeLock.WaitAsync();
                try
                {
                    _writer ??= await OpenAsync(CancellationToken.None);
                    await using var transaction = (SqliteTransaction)await _writer.BeginTransactionAsync();
                    for (var i = 0; i < batch.Count; i++)
                    {
                        var r = batch[i];
                        await transaction.SaveAsync("turn");
                        try
                        {
                            var (result, pulses) = await RunTurnCoreAsync(_writer, transaction, r.Lease, r.MaxMessages, r.LeaseDuration, r.MaxMessageAttempts, r.Processor, CancellationToken.None);
                            await transaction.ReleaseAsync("turn");
                            outcomes[i] = (result, null, pulses);
                        }
                        catch (Exception ex) when (ex is not OutOfMemoryException)
                        {
                            await transaction.RollbackAsync("turn");
                            await transaction.ReleaseAsync("turn");
                            outcomes[i] = (null, ex, default);
                        }
                    }

                    await transaction.CommitAsync();
                }
                finally
                {
                    _writeLock.Release();
                }
            }
            catch (Exception ex)
            {
                // Nothing of this group committed.
                foreach (var request in batch)
                {
                    request.Completion.TrySetException(ex);
                }

                continue;
            }

            for (var i = 0; i < batch.Count; i++)
            {
                if (outcomes[i].Error is { } error)
                {
                    batch[i].Completion.TrySetException(error);
                }
                else
                {
                    Pulse(outcomes[i].Pulses);
                    batch[i].Completion.TrySetResult(outcomes[i].Result!);
                }
            }
        }
    }

    private async Task<(TurnBatchResult Result, SignalSet Pulses)> RunTurnCoreAsync(
        SqliteConnection c,
        SqliteTransaction t,
        GrainLease lease,
        int maxMessages,
        TimeSpan leaseDuration,
        int maxMessageAttempts,
        ITurnProcessor processor,
        CancellationToken cancellationToken)
    {
        var now = NowMs();
        string? state = null;
        string? stateType = null;
        int schemaVersion;
        long version;
        await using (var command = Command(
            c,
            t,
            "SELECT state, state_type, schema_version, version FROM grains WHERE kind = $k AND key = $key AND owner = $me AND epoch = $e",
            ("$k", lease.Grain.Kind),
            ("$key", lease.Grain.Key),
            ("$me", lease.SiloId),
            ("$e", lease.Epoch)))
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            if (!await reader.ReadAsync(cancellationToken))
            {
                return (new TurnBatchResult(TurnBatchStatus.Fenced, 0, false, 0, 0), default(SignalSet));
            }

            state = reader.GetStringOrNull(0);
            stateType = reader.GetStringOrNull(1);
            schemaVersion = reader.GetInt32(2);
            version = reader.GetInt64(3);
        }

        var messages = new List<StoredMessage>();
        await using (var command = Command(
            c,
            t,
            "SELECT id, type, type_version, body, enqueued_at, idempotency_key, reply_to, attempts FROM inbox WHERE kind = $k AND key = $key AND due_at <= $now ORDER BY id LIMIT $max",
            ("$k", lease.Grain.Kind),
            ("$key", lease.Grain.Key),
            ("$now", now),
            ("$max", maxMessages)))
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                messages.Add(new StoredMessage(
                    reader.GetInt64(0),
                    reader.GetString(1),
                    reader.GetInt32(2),
                    reader.GetString(3),
                    FromMs(reader.GetInt64(4)),
                    reader.GetStringOrNull(5),
                    reader.GetStringOrNull(6),
                    reader.GetInt32(7)));
            }
        }

        var output = messages.Count == 0
            ? null
            : processor.Process(new TurnInput(lease.Grain, state, stateType, schemaVersion, version, messages, FromMs(now)));
        var pulses = default(SignalSet);
        var consumed = output?.Consumed.Count ?? 0;
        var deadLettered = 0;
        var until = now + (long)leaseDuration.TotalMilliseconds;
        if (output is not null && consumed > 0)
        {
            version += consumed;
            await ExecuteAsync(
                c,
                t,
                "UPDATE grains SET state = $s, state_type = $st, schema_version = $sv, version = $v, lease_until = $until, updated_at = $now WHERE kind = $k AND key = $key AND owner = $me AND epoch = $e",
                cancellationToken,
                ("$s", output.StateJson),
                ("$st", output.StateType),
                ("$sv", output.SchemaVersion),
                ("$v", version),
                ("$until", until),
                ("$now", now),
                ("$k", lease.Grain.Kind),
                ("$key", lease.Grain.Key),
                ("$me", lease.SiloId),
                ("$e", lease.Epoch));
            foreach (var message in output.Outgoing)
            {
                await InsertMessageAsync(c, t, message, now, cancellationToken);
                pulses.Inbox |= message.DueNow;
            }

            foreach (var effect in output.Effects)
            {
                pulses.Work |= await ExecuteAsync(
                    c,
                    t,
                    """
                    INSERT INTO work (effect_id, kind, key, host, type, type_version, body, status, attempt, max_attempts, not_before, created_at)
                    VALUES ($id, $k, $key, $host, $type, $tv, $body, 1, 0, $max, $now, $now) ON CONFLICT (effect_id) DO NOTHING
                    """,
                    cancellationToken,
                    ("$id", effect.EffectId),
                    ("$k", lease.Grain.Kind),
                    ("$key", lease.Grain.Key),
                    ("$host", effect.Host),
                    ("$type", effect.TypeName),
                    ("$tv", effect.TypeVersion),
                    ("$body", effect.Body),
                    ("$max", effect.MaxAttempts),
                    ("$now", now)) == 1;
            }

            foreach (var reply in output.Replies)
            {
                await InsertReplyAsync(c, t, lease.Grain, reply, now, cancellationToken);
                pulses.Reply = true;
            }

            await ExecuteAsync(c, t, $"DELETE FROM inbox WHERE id IN ({string.Join(',', output.Consumed.Select(id => id.ToString(CultureInfo.InvariantCulture)))})", cancellationToken);
        }
        else
        {
            await ExecuteAsync(
                c,
                t,
                "UPDATE grains SET lease_until = $until WHERE kind = $k AND key = $key AND owner = $me AND epoch = $e",
                cancellationToken,
                ("$until", until),
                ("$k", lease.Grain.Kind),
                ("$key", lease.Grain.Key),
                ("$me", lease.SiloId),
                ("$e", lease.Epoch));
        }

        if (output?.Failure is { } failure)
        {
            var failed = messages.First(m => m.Id == failure.MessageId);
            if (failure.Permanent || failed.Attempts + 1 >= maxMessageAttempts)
            {
                await ExecuteAsync(
                    c,
                    t,
                    """
                    INSERT INTO dead_letters (id, kind, key, type, type_version, body, error, attempts, reply_to, failed_at)
                    SELECT id, kind, key, type, type_version, body, $err, attempts + 1, reply_to, $now FROM inbox WHERE id = $id;
                    DELETE FROM inbox WHERE id = $id;
                    """,
                    cancellationToken,
                    ("$err", failure.Error),
                    ("$now", now),
                    ("$id", failure.MessageId));
                deadLettered = 1;
                if (failed.ReplyTo is not null)
                {
                    await InsertReplyAsync(c, t, lease.Grain, new StoredReply(failed.ReplyTo, null, 0, null, failure.Error), now, cancellationToken);
                    pulses.Reply = true;
                }
            }
            else
            {
                await ExecuteAsync(c, t, "UPDATE inbox SET attempts = attempts + 1 WHERE id = $id", cancellationToken, ("$id", failure.MessageId));
            }
        }

        var released = await ExecuteAsync(
            c,
            t,
            """
            UPDATE grains SET owner = NULL, lease_until = NULL
            WHERE kind = $k AND key = $key AND owner = $me AND epoch = $e
              AND NOT EXISTS (SELECT 1 FROM inbox WHERE kind = $k AND key = $key AND due_at <= $now)
            """,
            cancellationToken,
            ("$k", lease.Grain.Kind),
            ("$key", lease.Grain.Key),
            ("$me", lease.SiloId),
            ("$e", lease.Epoch),
            ("$now", now)) == 1;
        return (new TurnBatchResult(TurnBatchStatus.Committed, consumed + deadLettered, released, version, deadLettered), pulses);
    }

    /// <inheritdoc/>
    public Task<bool> ReleaseGrainAsync(GrainLease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        return WriteAsync(
            async (c, t, _) => await ExecuteAsync(
                c,
                t,
                "UPDATE grains SET owner = NULL, lease_until = NULL WHERE kind = $k AND key = $key AND owner = $me AND epoch = $e",
                cancellationToken,
                ("$k", lease.Grain.Kind),
                ("$key", lease.Grain.Key),
                ("$me", lease.SiloId),
                ("$e", lease.Epoch)) == 1,
            cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<TimeSpan?> GetTimeUntilNextDueAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        var now = NowMs();
        var next = await ScalarAsync(connection, null, "SELECT min(due_at) FROM inbox WHERE due_at > $now", cancellationToken, ("$now", now));
        return next is long ms ? TimeSpan.FromMilliseconds(Math.Max(0, ms - now)) : null;
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<WorkItem>> ClaimWorkAsync(string siloId, string host, int max, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        if (max <= 0)
        {
            return Task.FromResult<IReadOnlyList<WorkItem>>([]);
        }

        return WriteAsync<IReadOnlyList<WorkItem>>(
            async (c, t, _) =>
            {
                var now = NowMs();
                var ids = new List<string>();
                await using (var command = Command(
                    c,
                    t,
                    """
                    SELECT effect_id FROM work
                    WHERE host = $host AND ((status = 1 AND not_before <= $now) OR (status = 2 AND lease_until < $now))
                      AND EXISTS (SELECT 1 FROM silos WHERE silo_id = $me AND status = 1)
                    ORDER BY created_at, effect_id LIMIT $max
                    """,
                    ("$host", host),
                    ("$now", now),
                    ("$max", max),
                    ("$me", siloId)))
                await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
                {
                    while (await reader.ReadAsync(cancellationToken))
                    {
                        ids.Add(reader.GetString(0));
                    }
                }

                var items = new List<WorkItem>(ids.Count);
                foreach (var id in ids)
                {
                    await using var command = Command(
                        c,
                        t,
                        """
                        UPDATE work SET status = 2, owner = $me, attempt = attempt + 1, lease_until = $until
                        WHERE effect_id = $id
                        RETURNING effect_id, kind, key, host, type, type_version, body, attempt, max_attempts, created_at
                        """,
                        ("$me", siloId),
                        ("$until", now + (long)lease.TotalMilliseconds),
                        ("$id", id));
                    await using var reader = await command.ExecuteReaderAsync(cancellationToken);
                    if (await reader.ReadAsync(cancellationToken))
                    {
                        items.Add(new WorkItem(
                            reader.GetString(0),
                            new GrainId(reader.GetString(1), reader.GetString(2)),
                            reader.GetString(3),
                            reader.GetString(4),
                            reader.GetInt32(5),
                            reader.GetString(6),
                            reader.GetInt32(7),
                            reader.GetInt32(8),
                            siloId,
                            FromMs(reader.GetInt64(9))));
                    }
                }

                return items;
            },
            cancellationToken);
    }

    /// <inheritdoc/>
    public Task<bool> RenewWorkAsync(WorkItem item, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        return WriteAsync(
            async (c, t, _) => await ExecuteAsync(
                c,
                t,
                "UPDATE work SET lease_until = $until WHERE effect_id = $id AND owner = $me AND attempt = $a AND status = 2",
                cancellationToken,
                ("$until", NowMs() + (long)lease.TotalMilliseconds),
                ("$id", item.EffectId),
                ("$me", item.SiloId),
                ("$a", item.Attempt)) == 1,
            cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<bool> FinishWorkAsync(WorkItem item, WorkStatus status, string? error, NewMessage outcome, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        ArgumentNullException.ThrowIfNull(outcome);
        if (status is not (WorkStatus.Completed or WorkStatus.Failed))
        {
            throw new ArgumentOutOfRangeException(nameof(status), status, "An effect finishes as completed or failed.");
        }

        var finished = await WriteAsync(
            async (c, t, _) =>
            {
                var now = NowMs();
                var updated = await ExecuteAsync(
                    c,
                    t,
                    "UPDATE work SET status = $s, error = $err, finished_at = $now, lease_until = NULL WHERE effect_id = $id AND owner = $me AND attempt = $a AND status = 2",
                    cancellationToken,
                    ("$s", (int)status),
                    ("$err", error),
                    ("$now", now),
                    ("$id", item.EffectId),
                    ("$me", item.SiloId),
                    ("$a", item.Attempt));
                if (updated != 1)
                {
                    return false;
                }

                await InsertMessageAsync(c, t, outcome, now, cancellationToken);
                return true;
            },
            cancellationToken);
        if (finished)
        {
            Signals.Inbox.Pulse();
        }

        return finished;
    }

    /// <inheritdoc/>
    public Task<bool> RetryWorkAsync(WorkItem item, TimeSpan backoff, string error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        return WriteAsync(
            async (c, t, _) => await ExecuteAsync(
                c,
                t,
                "UPDATE work SET status = 1, owner = NULL, lease_until = NULL, not_before = $nb, error = $err WHERE effect_id = $id AND owner = $me AND attempt = $a AND status = 2",
                cancellationToken,
                ("$nb", NowMs() + (long)backoff.TotalMilliseconds),
                ("$err", error),
                ("$id", item.EffectId),
                ("$me", item.SiloId),
                ("$a", item.Attempt)) == 1,
            cancellationToken);
    }

    /// <inheritdoc/>
    public Task<StoredReply?> TakeReplyAsync(string requestId, CancellationToken cancellationToken = default)
        => WriteAsync<StoredReply?>(
            async (c, t, _) =>
            {
                await using var command = Command(c, t, "DELETE FROM replies WHERE request_id = $id RETURNING type, type_version, body, error", ("$id", requestId));
                await using var reader = await command.ExecuteReaderAsync(cancellationToken);
                if (!await reader.ReadAsync(cancellationToken))
                {
                    return null;
                }

                return new StoredReply(
                    requestId,
                    reader.GetStringOrNull(0),
                    reader.GetInt32(1),
                    reader.GetStringOrNull(2),
                    reader.GetStringOrNull(3));
            },
            cancellationToken);

    /// <inheritdoc/>
    public async Task<GrainSnapshot?> GetGrainAsync(GrainId id, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, null, $"{GrainColumns} WHERE kind = $k AND key = $key", ("$k", id.Kind), ("$key", id.Key));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadGrain(reader) : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<GrainSnapshot>> ListGrainsAsync(string kind, string? afterKey, int limit, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(
            connection,
            null,
            $"{GrainColumns} WHERE kind = $k AND ($after IS NULL OR key > $after) ORDER BY key LIMIT $limit",
            ("$k", kind),
            ("$after", afterKey),
            ("$limit", limit));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<GrainSnapshot>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(ReadGrain(reader));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<WorkRecord>> ListWorkAsync(GrainId grain, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(
            connection,
            null,
            "SELECT effect_id, host, type, status, attempt, max_attempts, owner, error FROM work WHERE kind = $k AND key = $key ORDER BY created_at, effect_id",
            ("$k", grain.Kind),
            ("$key", grain.Key));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<WorkRecord>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new WorkRecord(
                reader.GetString(0),
                grain,
                reader.GetString(1),
                reader.GetString(2),
                (WorkStatus)reader.GetInt32(3),
                reader.GetInt32(4),
                reader.GetInt32(5),
                reader.GetStringOrNull(6),
                reader.GetStringOrNull(7)));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(GrainId grain, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(
            connection,
            null,
            "SELECT id, type, body, error, attempts, failed_at FROM dead_letters WHERE kind = $k AND key = $key ORDER BY id",
            ("$k", grain.Kind),
            ("$key", grain.Key));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<DeadLetter>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new DeadLetter(reader.GetInt64(0), grain, reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetInt32(4), FromMs(reader.GetInt64(5))));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<QueueDepth> GetQueueDepthAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken);
        var inbox = (long)(await ScalarAsync(connection, null, "SELECT count(*) FROM inbox", cancellationToken))!;
        var work = (long)(await ScalarAsync(connection, null, "SELECT count(*) FROM work WHERE status IN (1, 2)", cancellationToken))!;
        return new QueueDepth(inbox, work);
    }

    /// <inheritdoc/>
    public Task<int> PruneAsync(TimeSpan idempotencyRetention, TimeSpan replyRetention, CancellationToken cancellationToken = default)
        => WriteAsync(
            async (c, t, _) =>
            {
                var now = NowMs();
                var keys = await ExecuteAsync(c, t, "DELETE FROM idempotency_keys WHERE created_at < $cutoff", cancellationToken, ("$cutoff", now - (long)idempotencyRetention.TotalMilliseconds));
                var replies = await ExecuteAsync(c, t, "DELETE FROM replies WHERE created_at < $cutoff", cancellationToken, ("$cutoff", now - (long)replyRetention.TotalMilliseconds));
                return keys + replies;
            },
            cancellationToken);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _turns.Writer.TryComplete();
        if (_turnWriter is not null)
        {
            await _turnWriter;
        }

        await _writeLock.WaitAsync();
        try
        {
            if (_writer is not null)
            {
                await _writer.DisposeAsync();
                _writer = null;
            }
        }
        finally
        {
            _writeLock.Release();
            _writeLock.Dispose();
        }
    }

    private const string GrainColumns = "SELECT kind, key, state, state_type, schema_version, version, owner, epoch, lease_until, updated_at FROM grains";

    private static GrainSnapshot ReadGrain(SqliteDataReader reader) => new(
        new GrainId(reader.GetString(0), reader.GetString(1)),
        reader.GetStringOrNull(2),
        reader.GetStringOrNull(3),
        reader.GetInt32(4),
        reader.GetInt64(5),
        reader.GetStringOrNull(6),
        reader.GetInt64(7),
        (reader.GetInt64OrNull(8) is { } ms8 ? FromMs(ms8) : null),
        FromMs(reader.GetInt64(9)));

    private static async Task<EnqueueOutcome> InsertMessageAsync(SqliteConnection c, SqliteTransaction t, NewMessage message, long now, CancellationToken cancellationToken)
    {
        await ExecuteAsync(
            c,
            t,
            "INSERT INTO grains (kind, key, created_at, updated_at) VALUES ($k, $key, $now, $now) ON CONFLICT (kind, key) DO NOTHING",
            cancellationToken,
            ("$k", message.Target.Kind),
            ("$key", message.Target.Key),
            ("$now", now));
        if (message.IdempotencyKey is not null)
        {
            var inserted = await ExecuteAsync(
                c,
                t,
                "INSERT INTO idempotency_keys (kind, key, idempotency_key, created_at) VALUES ($k, $key, $ik, $now) ON CONFLICT DO NOTHING",
                cancellationToken,
                ("$k", message.Target.Kind),
                ("$key", message.Target.Key),
                ("$ik", message.IdempotencyKey),
                ("$now", now));
            if (inserted == 0)
            {
                return EnqueueOutcome.Duplicate;
            }
        }

        var dueAt = message.DueAt?.ToUnixTimeMilliseconds() ?? now + (long)(message.Delay ?? TimeSpan.Zero).TotalMilliseconds;
        await ExecuteAsync(
            c,
            t,
            """
            INSERT INTO inbox (kind, key, type, type_version, body, due_at, enqueued_at, idempotency_key, reply_to)
            VALUES ($k, $key, $type, $tv, $body, $due, $now, $ik, $reply)
            """,
            cancellationToken,
            ("$k", message.Target.Kind),
            ("$key", message.Target.Key),
            ("$type", message.TypeName),
            ("$tv", message.TypeVersion),
            ("$body", message.Body),
            ("$due", dueAt),
            ("$now", now),
            ("$ik", message.IdempotencyKey),
            ("$reply", message.ReplyTo));
        return EnqueueOutcome.Accepted;
    }

    private static Task<int> InsertReplyAsync(SqliteConnection c, SqliteTransaction t, GrainId grain, StoredReply reply, long now, CancellationToken cancellationToken)
        => ExecuteAsync(
            c,
            t,
            """
            INSERT INTO replies (request_id, kind, key, type, type_version, body, error, created_at) VALUES ($id, $k, $key, $type, $tv, $body, $err, $now)
            ON CONFLICT (request_id) DO NOTHING
            """,
            cancellationToken,
            ("$id", reply.RequestId),
            ("$k", grain.Kind),
            ("$key", grain.Key),
            ("$type", reply.TypeName),
            ("$tv", reply.TypeVersion),
            ("$body", reply.Body),
            ("$err", reply.Error),
            ("$now", now));

    private void Pulse(SignalSet pulses)
    {
        if (pulses.Inbox)
        {
            Signals.Inbox.Pulse();
        }

        if (pulses.Work)
        {
            Signals.Work.Pulse();
        }

        if (pulses.Reply)
        {
            Signals.Reply.Pulse();
        }
    }

    private async Task<T> WriteAsync<T>(Func<SqliteConnection, SqliteTransaction, CancellationToken, Task<T>> body, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            _writer ??= await OpenAsync(cancellationToken);
            await using var transaction = (SqliteTransaction)await _writer.BeginTransactionAsync(cancellationToken);
            var result = await body(_writer, transaction, cancellationToken);
            await transaction.CommitAsync(cancellationToken);
            return result;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task<SqliteConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken);
            await ExecuteAsync(connection, null, $"PRAGMA journal_mode = WAL; PRAGMA synchronous = {SynchronousLevel()}; PRAGMA foreign_keys = OFF;", cancellationToken);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private string SynchronousLevel() => _options.Synchronous.ToUpperInvariant() switch
    {
        "OFF" => "OFF",
        "NORMAL" => "NORMAL",
        "FULL" => "FULL",
        "EXTRA" => "EXTRA",
        _ => throw new ArgumentException($"Unknown SQLite synchronous level '{_options.Synchronous}'."),
    };

    private long NowMs() => _timeProvider.GetUtcNow().ToUnixTimeMilliseconds();

    private static DateTimeOffset FromMs(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);

    private static SqliteCommand Command(SqliteConnection connection, SqliteTransaction? transaction, string sql, params (string Name, object? Value)[] parameters)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
#pragma warning disable CA2100 // SQL text is constant per call site; values are parameters.
        command.CommandText = sql;
#pragma warning restore CA2100
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        return command;
    }

    private static async Task<int> ExecuteAsync(SqliteConnection connection, SqliteTransaction? transaction, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = Command(connection, transaction, sql, parameters);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static async Task<object?> ScalarAsync(SqliteConnection connection, SqliteTransaction? transaction, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = Command(connection, transaction, sql, parameters);
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return value is DBNull ? null : value;
    }

    private const int MaxTurnsPerCommit = 64;

    private sealed record TurnRequest(
        GrainLease Lease,
        int MaxMessages,
        TimeSpan LeaseDuration,
        int MaxMessageAttempts,
        ITurnProcessor Processor,
        CancellationToken CancellationToken)
    {
        public TaskCompletionSource<TurnBatchResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private struct SignalSet
    {
        public bool Inbox;
        public bool Work;
        public bool Reply;
    }
}
