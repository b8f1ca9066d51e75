using System.Globalization;
using System.Text.RegularExpressions;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.Logging;
using Npgsql;
using NpgsqlTypes;

namespace Drydock.Runtime.PostgreSql;

/// <summary>
/// The cluster store on PostgreSQL. Claims use <c>FOR UPDATE SKIP LOCKED</c>; a turn is one transaction that locks the
/// grain row only where <c>owner</c> and <c>epoch</c> still match; effect results are accepted only where
/// <c>owner</c> and <c>attempt</c> still match. Every time is the database clock. Wake-ups are LISTEN/NOTIFY on
/// <c>{schema}_inbox</c>, <c>{schema}_work</c> and <c>{schema}_reply</c>; callers poll as well, so a lost
/// notification only costs latency.
/// </summary>
public sealed partial class PostgresRuntimeStore : IRuntimeStore
{
    private readonly PostgresRuntimeStoreOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _inboxChannel;
    private readonly string _workChannel;
    private readonly string _replyChannel;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _startLock = new();
    private Task? _listener;

    /// <summary>Creates the store; connections are opened on first use.</summary>
    public PostgresRuntimeStore(PostgresRuntimeStoreOptions options, TimeProvider timeProvider, ILogger<PostgresRuntimeStore> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.ConnectionString);
        if (!SchemaName().IsMatch(options.Schema))
        {
            throw new ArgumentException($"'{options.Schema}' is not a plain lower-case identifier.", nameof(options));
        }

        _options = options;
        _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        var builder = new NpgsqlConnectionStringBuilder(options.ConnectionString)
        {
            SearchPath = options.Schema,
            CommandTimeout = (int)Math.Ceiling(options.CommandTimeout.TotalSeconds),
            Options = $"-c idle_in_transaction_session_timeout={(long)options.IdleInTransactionTimeout.TotalMilliseconds}",
            Enlist = false,
            // The runtime keeps no session state on pooled connections (the LISTEN connection is its own).
            NoResetOnClose = true,
        };
        if (builder.MaxAutoPrepare == 0)
        {
            builder.MaxAutoPrepare = 64;
        }

        _dataSource = NpgsqlDataSource.Create(builder);
        _inboxChannel = options.Schema + "_inbox";
        _workChannel = options.Schema + "_work";
        _replyChannel = options.Schema + "_reply";
    }

    /// <inheritdoc/>
    public string ProviderName => "postgresql";

    /// <inheritdoc/>
    public RuntimeSignals Signals { get; } = new();

    /// <summary>The latest schema version this binary knows.</summary>
    public static int LatestSchemaVersion => PostgresMigrations.All[^1].Version;

    /// <inheritdoc/>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        lock (_startLock)
        {
            if (_options.Listen)
            {
                _listener ??= Task.Run(() => ListenAsync(_stopping.Token), CancellationToken.None);
            }
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public async Task<int> MigrateAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        // One migrator at a time across the cluster; the lock ends with the transaction.
        await ExecuteAsync(connection, $"""
            SELECT pg_advisory_xact_lock(7731500001);
            CREATE SCHEMA IF NOT EXISTS {_options.Schema};
            CREATE TABLE IF NOT EXISTS runtime_schema (version int PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
            """, cancellationToken);
        var current = Convert.ToInt32(await ScalarAsync(connection, "SELECT coalesce(max(version), 0) FROM runtime_schema", cancellationToken), CultureInfo.InvariantCulture);
        if (current > LatestSchemaVersion)
        {
            throw new RuntimeSchemaTooNewException(current, LatestSchemaVersion);
        }

        foreach (var migration in PostgresMigrations.All.Where(m => m.Version > current))
        {
            await ExecuteAsync(connection, migration.Sql, cancellationToken);
            await ExecuteAsync(connection, "INSERT INTO runtime_schema (version, description) VALUES ($1, $2)", cancellationToken, Int(migration.Version), Text(migration.Description));
            Log.Migrated(_logger, migration.Version, migration.Description);
            current = migration.Version;
        }

        await transaction.CommitAsync(cancellationToken);
        return current;
    }

    /// <inheritdoc/>
    public async Task RegisterSiloAsync(SiloRegistration registration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(registration);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await ExecuteAsync(
            connection,
            """
            INSERT INTO silos (silo_id, role, hypervisor_host, machine, process_id, status) VALUES ($1, $2, $3, $4, $5, 1)
            ON CONFLICT (silo_id) DO UPDATE SET status = 1, role = $2, hypervisor_host = $3, heartbeat_at = now()
            """,
            cancellationToken,
            Text(registration.SiloId),
            Int((int)registration.Role),
            Text(registration.HypervisorHost),
            Text(registration.Machine),
            Int(registration.ProcessId));
    }

    /// <inheritdoc/>
    public async Task<bool> HeartbeatAsync(string siloId, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ExecuteAsync(connection, "UPDATE silos SET heartbeat_at = now() WHERE silo_id = $1 AND status = 1", cancellationToken, Text(siloId)) == 1;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<string>> DeclareDeadSilosAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var dead = new List<string>();
        await using (var command = new NpgsqlCommand("UPDATE silos SET status = 3 WHERE status = 1 AND heartbeat_at < now() - $1 RETURNING silo_id", connection) { Parameters = { Interval(timeout) } })
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                dead.Add(reader.GetString(0));
            }
        }

        if (dead.Count > 0)
        {
            var ids = TextArray([.. dead]);
            await ExecuteAsync(connection, "UPDATE grains SET lease_until = now() - interval '1 millisecond' WHERE owner = ANY($1)", cancellationToken, ids);
            await ExecuteAsync(connection, "UPDATE work SET lease_until = now() - interval '1 millisecond' WHERE owner = ANY($1) AND status = 2", cancellationToken, TextArray([.. dead]));
        }

        await transaction.CommitAsync(cancellationToken);
        if (dead.Count > 0)
        {
            await NotifyAsync(_inboxChannel, cancellationToken);
            await NotifyAsync(_workChannel, cancellationToken);
        }

        return dead;
    }

    /// <inheritdoc/>
    public async Task LeaveAsync(string siloId, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                Command("UPDATE silos SET status = 2 WHERE silo_id = $1", Text(siloId)),
                Command("UPDATE grains SET owner = NULL, lease_until = NULL WHERE owner = $1", Text(siloId)),
                Command("UPDATE work SET status = 1, owner = NULL, lease_until = NULL WHERE owner = $1 AND status = 2", Text(siloId)),
                Command($"SELECT pg_notify('{_inboxChannel}', ''), pg_notify('{_workChannel}', '')"),
            },
        };
        await batch.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<SiloRecord>> ListSilosAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("SELECT silo_id, role, hypervisor_host, machine, process_id, status, started_at, heartbeat_at FROM silos ORDER BY started_at, silo_id", connection);
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
                reader.GetDateTimeOffset(6),
                reader.GetDateTimeOffset(7)));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<EnqueueOutcome>> EnqueueAsync(IReadOnlyList<NewMessage> messages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0)
        {
            return [];
        }

        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection);
        var inserts = new List<NpgsqlBatchCommand>(messages.Count);
        foreach (var message in messages)
        {
            inserts.Add(AddMessage(batch, message));
        }

        if (messages.Any(m => m.DueNow))
        {
            batch.BatchCommands.Add(Command($"SELECT pg_notify('{_inboxChannel}', '')"));
        }

        // One batch is one implicit transaction: all messages or none.
        await batch.ExecuteNonQueryAsync(cancellationToken);
        return [.. inserts.Select(c => c.RecordsAffected == 1 ? EnqueueOutcome.Accepted : EnqueueOutcome.Duplicate)];
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<GrainLease>> ClaimGrainsAsync(string siloId, IReadOnlyCollection<string> kinds, int max, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        if (max <= 0 || kinds.Count == 0)
        {
            return [];
        }

        // Fast path: the oldest due messages (a materialized window read in due-time index order), then their
        // grains. The window keeps the plan independent of table statistics, which are stale whenever the
        // inbox grew quickly (a bulk enqueue): a plan driven from grains then sorts the whole join (~100 ms).
        // If the window was full and still gave too few grains (one grain's backlog clogs the head), scan
        // the whole inbox as well, so no grain starves behind another's backlog.
        var leases = await ClaimAsync(ClaimFromWindowSql, siloId, kinds, max, lease, cancellationToken);
        if (leases.Count < max && await WindowIsFullAsync(cancellationToken))
        {
            leases.AddRange(await ClaimAsync(ClaimFromInboxSql, siloId, kinds, max - leases.Count, lease, cancellationToken));
        }

        return leases;
    }

    // Literal limits on purpose: with a parameter there, the generic plan of the prepared statement assumes
    // a large limit and sorts. Rows locked beyond the $2 grains chosen are unlocked when the statement ends.
    private const int ClaimWindow = 1024;

    private const string ClaimFromWindowSql = """
        WITH head AS MATERIALIZED (
            SELECT kind, key, due_at, id FROM inbox WHERE due_at <= now() ORDER BY due_at, id LIMIT 1024),
        candidates AS (
            SELECT g.kind, g.key, g.owner FROM head h JOIN grains g ON g.kind = h.kind AND g.key = h.key
            WHERE (g.owner IS NULL OR g.lease_until < now()) AND g.kind = ANY($1)
              AND EXISTS (SELECT 1 FROM silos WHERE silo_id = $3 AND status = 1)
            ORDER BY h.due_at, h.id
            LIMIT 128
            FOR UPDATE OF g SKIP LOCKED),
        distinct_candidates AS (SELECT DISTINCT kind, key, owner FROM candidates LIMIT $2)
        UPDATE grains g SET owner = $3, epoch = g.epoch + 1, lease_until = now() + $4
        FROM distinct_candidates d WHERE g.kind = d.kind AND g.key = d.key
        RETURNING g.kind, g.key, g.epoch, d.owner
        """;

    private const string ClaimFromInboxSql = """
        WITH candidates AS (
            SELECT g.kind, g.key, g.owner FROM inbox i JOIN grains g ON g.kind = i.kind AND g.key = i.key
            WHERE i.due_at <= now() AND (g.owner IS NULL OR g.lease_until < now()) AND g.kind = ANY($1)
              AND EXISTS (SELECT 1 FROM silos WHERE silo_id = $3 AND status = 1)
            ORDER BY i.due_at, i.id
            LIMIT 128
            FOR UPDATE OF g SKIP LOCKED),
        distinct_candidates AS (SELECT DISTINCT kind, key, owner FROM candidates LIMIT $2)
        UPDATE grains g SET owner = $3, epoch = g.epoch + 1, lease_until = now() + $4
        FROM distinct_candidates d WHERE g.kind = d.kind AND g.key = d.key
        RETURNING g.kind, g.key, g.epoch, d.owner
        """;

    private async Task<bool> WindowIsFullAsync(CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        var due = await ScalarAsync(connection, $"SELECT count(*) FROM (SELECT 1 FROM inbox WHERE due_at <= now() ORDER BY due_at, id LIMIT {ClaimWindow}) w", cancellationToken);
        return Convert.ToInt64(due, CultureInfo.InvariantCulture) >= ClaimWindow;
    }

    private async Task<List<GrainLease>> ClaimAsync(string sql, string siloId, IReadOnlyCollection<string> kinds, int max, TimeSpan lease, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
#pragma warning disable CA2100 // One of the two constant claim statements.
        await using var command = new NpgsqlCommand(sql, connection)
        {
            Parameters = { TextArray([.. kinds]), Int(max), Text(siloId), Interval(lease) },
        };
#pragma warning restore CA2100
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var leases = new List<GrainLease>();
        while (await reader.ReadAsync(cancellationToken))
        {
            leases.Add(new GrainLease(new GrainId(reader.GetString(0), reader.GetString(1)), siloId, reader.GetInt64(2), reader.GetStringOrNull(3)));
        }

        return leases;
    }

    /// <inheritdoc/>
    public async Task<TurnBatchResult> RunTurnAsync(GrainLease lease, int maxMessages, TimeSpan leaseDuration, int maxMessageAttempts, ITurnProcessor processor, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ArgumentNullException.ThrowIfNull(processor);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);

        // Round trip 1: lock the row only if it is still ours, then read the due messages.
        string? state;
        string? stateType;
        int schemaVersion;
        long version;
        DateTimeOffset now;
        var messages = new List<StoredMessage>();
        await using (var read = new NpgsqlBatch(connection, transaction)
        {
            BatchCommands =
            {
                Command(
                    "SELECT state, state_type, schema_version, version, now() FROM grains WHERE kind = $1 AND key = $2 AND owner = $3 AND epoch = $4 FOR UPDATE",
                    Text(lease.Grain.Kind),
                    Text(lease.Grain.Key),
                    Text(lease.SiloId),
                    Long(lease.Epoch)),
                Command(
                    "SELECT id, type, type_version, body, enqueued_at, idempotency_key, reply_to, attempts FROM inbox WHERE kind = $1 AND key = $2 AND due_at <= now() ORDER BY id LIMIT $3",
                    Text(lease.Grain.Kind),
                    Text(lease.Grain.Key),
                    Int(maxMessages)),
            },
        })
        await using (var reader = await read.ExecuteReaderAsync(cancellationToken))
        {
            if (!await reader.ReadAsync(cancellationToken))
            {
                // Owner or epoch moved on: a newer claim exists. Nothing is written; the rollback is the fence.
                return new TurnBatchResult(TurnBatchStatus.Fenced, 0, false, 0, 0);
            }

            state = reader.GetStringOrNull(0);
            stateType = reader.GetStringOrNull(1);
            schemaVersion = reader.GetInt32(2);
            version = reader.GetInt64(3);
            now = reader.GetDateTimeOffset(4);
            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                messages.Add(new StoredMessage(
                    reader.GetInt64(0),
                    reader.GetString(1),
                    reader.GetInt32(2),
                    reader.GetString(3),
                    reader.GetDateTimeOffset(4),
                    reader.GetStringOrNull(5),
                    reader.GetStringOrNull(6),
                    reader.GetInt32(7)));
            }
        }

        var output = messages.Count == 0
            ? null
            : processor.Process(new TurnInput(lease.Grain, state, stateType, schemaVersion, version, messages, now));

        // Round trip 2: write everything the turn decided, consume, maybe release.
        var kind = Text(lease.Grain.Kind);
        var key = Text(lease.Grain.Key);
        await using var write = new NpgsqlBatch(connection, transaction);
        var consumed = output?.Consumed.Count ?? 0;
        var deadLettered = 0;
        var notifyInbox = false;
        if (output is not null && consumed > 0)
        {
            version += consumed;
            write.BatchCommands.Add(Command(
                "UPDATE grains SET state = $1, state_type = $2, schema_version = $3, version = $4, lease_until = now() + $5, updated_at = now() WHERE kind = $6 AND key = $7 AND owner = $8 AND epoch = $9",
                Json(output.StateJson),
                Text(output.StateType),
                Int(output.SchemaVersion),
                Long(version),
                Interval(leaseDuration),
                Text(lease.Grain.Kind),
                Text(lease.Grain.Key),
                Text(lease.SiloId),
                Long(lease.Epoch)));
            foreach (var message in output.Outgoing)
            {
                AddMessage(write, message);
                notifyInbox |= message.DueNow;
            }

            foreach (var effect in output.Effects)
            {
                write.BatchCommands.Add(Command(
                    """
                    INSERT INTO work (effect_id, kind, key, host, type, type_version, body, status, max_attempts)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8) ON CONFLICT (effect_id) DO NOTHING
                    """,
                    Text(effect.EffectId),
                    Text(lease.Grain.Kind),
                    Text(lease.Grain.Key),
                    Text(effect.Host),
                    Text(effect.TypeName),
                    Int(effect.TypeVersion),
                    Json(effect.Body),
                    Int(effect.MaxAttempts)));
                write.BatchCommands.Add(Command("SELECT pg_notify($1, $2)", Text(_workChannel), Text(effect.Host)));
            }

            foreach (var reply in output.Replies)
            {
                AddReply(write, lease.Grain, reply);
            }

            write.BatchCommands.Add(Command("DELETE FROM inbox WHERE id = ANY($1)", LongArray([.. output.Consumed])));
        }
        else
        {
            write.BatchCommands.Add(Command(
                "UPDATE grains SET lease_until = now() + $1 WHERE kind = $2 AND key = $3 AND owner = $4 AND epoch = $5",
                Interval(leaseDuration),
                Text(lease.Grain.Kind),
                Text(lease.Grain.Key),
                Text(lease.SiloId),
                Long(lease.Epoch)));
        }

        if (output?.Failure is { } failure)
        {
            var failed = messages.First(m => m.Id == failure.MessageId);
            if (failure.Permanent || failed.Attempts + 1 >= maxMessageAttempts)
            {
                write.BatchCommands.Add(Command(
                    """
                    WITH moved AS (DELETE FROM inbox WHERE id = $1 RETURNING id, kind, key, type, type_version, body, attempts, reply_to)
                    INSERT INTO dead_letters (id, kind, key, type, type_version, body, error, attempts, reply_to)
                    SELECT id, kind, key, type, type_version, body, $2, attempts + 1, reply_to FROM moved
                    """,
                    Long(failure.MessageId),
                    Text(failure.Error)));
                deadLettered = 1;
                if (failed.ReplyTo is not null)
                {
                    AddReply(write, lease.Grain, new StoredReply(failed.ReplyTo, null, 0, null, failure.Error));
                }
            }
            else
            {
                write.BatchCommands.Add(Command("UPDATE inbox SET attempts = attempts + 1 WHERE id = $1", Long(failure.MessageId)));
            }
        }

        var release = Command(
            """
            UPDATE grains SET owner = NULL, lease_until = NULL
            WHERE kind = $1 AND key = $2 AND owner = $3 AND epoch = $4
              AND NOT EXISTS (SELECT 1 FROM inbox WHERE kind = $1 AND key = $2 AND due_at <= now())
            """,
            kind,
            key,
            Text(lease.SiloId),
            Long(lease.Epoch));
        write.BatchCommands.Add(release);
        if (notifyInbox)
        {
            write.BatchCommands.Add(Command($"SELECT pg_notify('{_inboxChannel}', '')"));
        }

        await write.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return new TurnBatchResult(TurnBatchStatus.Committed, consumed + deadLettered, release.RecordsAffected == 1, version, deadLettered);
    }

    /// <inheritdoc/>
    public async Task<bool> ReleaseGrainAsync(GrainLease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ExecuteAsync(
            connection,
            "UPDATE grains SET owner = NULL, lease_until = NULL WHERE kind = $1 AND key = $2 AND owner = $3 AND epoch = $4",
            cancellationToken,
            Text(lease.Grain.Kind),
            Text(lease.Grain.Key),
            Text(lease.SiloId),
            Long(lease.Epoch)) == 1;
    }

    /// <inheritdoc/>
    public async Task<TimeSpan?> GetTimeUntilNextDueAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        var value = await ScalarAsync(connection, "SELECT min(due_at) - now() FROM inbox WHERE due_at > now()", cancellationToken);
        return value is TimeSpan delay ? (delay < TimeSpan.Zero ? TimeSpan.Zero : delay) : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<WorkItem>> ClaimWorkAsync(string siloId, string host, int max, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        if (max <= 0)
        {
            return [];
        }

        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            """
            WITH candidates AS (
                SELECT effect_id FROM work
                WHERE host = $1 AND ((status = 1 AND not_before <= now()) OR (status = 2 AND lease_until < now()))
                  AND EXISTS (SELECT 1 FROM silos WHERE silo_id = $3 AND status = 1)
                ORDER BY created_at, effect_id
                LIMIT 64
                FOR UPDATE SKIP LOCKED),
            chosen AS (SELECT effect_id FROM candidates LIMIT $2)
            UPDATE work w SET status = 2, owner = $3, attempt = w.attempt + 1, lease_until = now() + $4
            FROM chosen c WHERE w.effect_id = c.effect_id
            RETURNING w.effect_id, w.kind, w.key, w.host, w.type, w.type_version, w.body, w.attempt, w.max_attempts, w.created_at
            """,
            connection)
        {
            Parameters = { Text(host), Int(max), Text(siloId), Interval(lease) },
        };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var items = new List<WorkItem>();
        while (await reader.ReadAsync(cancellationToken))
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
                reader.GetDateTimeOffset(9)));
        }

        return items;
    }

    /// <inheritdoc/>
    public async Task<bool> RenewWorkAsync(WorkItem item, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ExecuteAsync(
            connection,
            "UPDATE work SET lease_until = now() + $1 WHERE effect_id = $2 AND owner = $3 AND attempt = $4 AND status = 2",
            cancellationToken,
            Interval(lease),
            Text(item.EffectId),
            Text(item.SiloId),
            Int(item.Attempt)) == 1;
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

        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var updated = await ExecuteAsync(
            connection,
            "UPDATE work SET status = $1, error = $2, finished_at = now(), lease_until = NULL WHERE effect_id = $3 AND owner = $4 AND attempt = $5 AND status = 2",
            cancellationToken,
            Int((int)status),
            Text(error),
            Text(item.EffectId),
            Text(item.SiloId),
            Int(item.Attempt));
        if (updated != 1)
        {
            // Another attempt owns the effect now (or finished it): this result is stale.
            await transaction.RollbackAsync(cancellationToken);
            return false;
        }

        await using var batch = new NpgsqlBatch(connection, transaction);
        AddMessage(batch, outcome);
        batch.BatchCommands.Add(Command($"SELECT pg_notify('{_inboxChannel}', '')"));
        await batch.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return true;
    }

    /// <inheritdoc/>
    public async Task<bool> RetryWorkAsync(WorkItem item, TimeSpan backoff, string error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ExecuteAsync(
            connection,
            "UPDATE work SET status = 1, owner = NULL, lease_until = NULL, not_before = now() + $1, error = $2 WHERE effect_id = $3 AND owner = $4 AND attempt = $5 AND status = 2",
            cancellationToken,
            Interval(backoff),
            Text(error),
            Text(item.EffectId),
            Text(item.SiloId),
            Int(item.Attempt)) == 1;
    }

    /// <inheritdoc/>
    public async Task<StoredReply?> TakeReplyAsync(string requestId, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("DELETE FROM replies WHERE request_id = $1 RETURNING type, type_version, body, error", connection) { Parameters = { Text(requestId) } };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        if (!await reader.ReadAsync(cancellationToken))
        {
            return null;
        }

        return new StoredReply(requestId, reader.GetStringOrNull(0), reader.GetInt32(1), reader.GetStringOrNull(2), reader.GetStringOrNull(3));
    }

    /// <inheritdoc/>
    public async Task<GrainSnapshot?> GetGrainAsync(GrainId id, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"{GrainColumns} WHERE kind = $1 AND key = $2", connection) { Parameters = { Text(id.Kind), Text(id.Key) } };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadGrain(reader) : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<GrainSnapshot>> ListGrainsAsync(string kind, string? afterKey, int limit, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"{GrainColumns} WHERE kind = $1 AND ($2::text IS NULL OR key > $2) ORDER BY key LIMIT $3", connection)
        {
            Parameters = { Text(kind), Text(afterKey), Int(limit) },
        };
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
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            "SELECT effect_id, host, type, status, attempt, max_attempts, owner, error FROM work WHERE kind = $1 AND key = $2 ORDER BY created_at, effect_id",
            connection)
        {
            Parameters = { Text(grain.Kind), Text(grain.Key) },
        };
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
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("SELECT id, type, body, error, attempts, failed_at FROM dead_letters WHERE kind = $1 AND key = $2 ORDER BY id", connection)
        {
            Parameters = { Text(grain.Kind), Text(grain.Key) },
        };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<DeadLetter>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new DeadLetter(reader.GetInt64(0), grain, reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetInt32(4), reader.GetDateTimeOffset(5)));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<QueueDepth> GetQueueDepthAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM work WHERE status IN (1, 2))", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return new QueueDepth(reader.GetInt64(0), reader.GetInt64(1));
    }

    /// <inheritdoc/>
    public async Task<int> PruneAsync(TimeSpan idempotencyRetention, TimeSpan replyRetention, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                Command("DELETE FROM idempotency_keys WHERE created_at < now() - $1", Interval(idempotencyRetention)),
                Command("DELETE FROM replies WHERE created_at < now() - $1", Interval(replyRetention)),
            },
        };
        return await batch.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        if (_listener is not null)
        {
            try
            {
                await _listener;
            }
            catch (OperationCanceledException)
            {
                // Stopping.
            }
        }

        await _dataSource.DisposeAsync();
        _stopping.Dispose();
    }

    private static readonly TimeSpan ListenProbeInterval = TimeSpan.FromSeconds(15);

    private const string GrainColumns = "SELECT kind, key, state, state_type, schema_version, version, owner, epoch, lease_until, updated_at FROM grains";

    private static GrainSnapshot ReadGrain(NpgsqlDataReader reader) => new(
        new GrainId(reader.GetString(0), reader.GetString(1)),
        reader.GetStringOrNull(2),
        reader.GetStringOrNull(3),
        reader.GetInt32(4),
        reader.GetInt64(5),
        reader.GetStringOrNull(6),
        reader.GetInt64(7),
        reader.GetDateTimeOffsetOrNull(8),
        reader.GetDateTimeOffset(9));

    private static NpgsqlBatchCommand AddMessage(NpgsqlBatch batch, NewMessage message)
    {
        batch.BatchCommands.Add(Command("INSERT INTO grains (kind, key) VALUES ($1, $2) ON CONFLICT (kind, key) DO NOTHING", Text(message.Target.Kind), Text(message.Target.Key)));
        var parameters = new[]
        {
            Text(message.Target.Kind),
            Text(message.Target.Key),
            Text(message.TypeName),
            Int(message.TypeVersion),
            Json(message.Body),
            Timestamp(message.DueAt),
            Interval(message.Delay ?? TimeSpan.Zero),
            Text(message.IdempotencyKey),
            Text(message.ReplyTo),
        };
        // With a key, the inbox row exists only if the key was new: a unique key, not a check-then-insert.
        var insert = message.IdempotencyKey is null
            ? Command(
                "INSERT INTO inbox (kind, key, type, type_version, body, due_at, idempotency_key, reply_to) VALUES ($1, $2, $3, $4, $5, coalesce($6, now() + $7), $8, $9)",
                parameters)
            : Command(
                """
                WITH k AS (INSERT INTO idempotency_keys (kind, key, idempotency_key) VALUES ($1, $2, $8) ON CONFLICT DO NOTHING RETURNING 1)
                INSERT INTO inbox (kind, key, type, type_version, body, due_at, idempotency_key, reply_to)
                SELECT $1, $2, $3, $4, $5, coalesce($6, now() + $7), $8, $9 WHERE EXISTS (SELECT 1 FROM k)
                """,
                parameters);
        batch.BatchCommands.Add(insert);
        return insert;
    }

    private void AddReply(NpgsqlBatch batch, GrainId grain, StoredReply reply)
    {
        batch.BatchCommands.Add(Command(
            "INSERT INTO replies (request_id, kind, key, type, type_version, body, error) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id) DO NOTHING",
            Text(reply.RequestId),
            Text(grain.Kind),
            Text(grain.Key),
            Text(reply.TypeName),
            Int(reply.TypeVersion),
            Json(reply.Body),
            Text(reply.Error)));
        batch.BatchCommands.Add(Command("SELECT pg_notify($1, $2)", Text(_replyChannel), Text(reply.RequestId)));
    }

    private async Task NotifyAsync(string channel, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await ExecuteAsync(connection, "SELECT pg_notify($1, '')", cancellationToken, Text(channel));
    }

    private async Task ListenAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
                connection.Notification += (_, e) =>
                {
                    if (e.Channel == _inboxChannel)
                    {
                        Signals.Inbox.Pulse();
                    }
                    else if (e.Channel == _workChannel)
                    {
                        Signals.Work.Pulse();
                    }
                    else if (e.Channel == _replyChannel)
                    {
                        Signals.Reply.Pulse();
                    }
                };
                await ExecuteAsync(connection, $"LISTEN {_inboxChannel}; LISTEN {_workChannel}; LISTEN {_replyChannel};", cancellationToken);
                Log.Listening(_logger, _options.Schema);
                // Anything notified while we were not listening is found by the pollers now.
                Signals.PulseAll();
                while (true)
                {
                    // A silent network failure would leave WaitAsync waiting forever: probe the connection
                    // whenever nothing arrived for a while, so a dead one throws and is replaced.
                    if (!await connection.WaitAsync(ListenProbeInterval, cancellationToken))
                    {
                        await ExecuteAsync(connection, "SELECT 1", cancellationToken);
                    }
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or System.IO.IOException or TimeoutException or InvalidOperationException)
            {
                Log.ListenFailed(_logger, ex);
                Signals.PulseAll();
                try
                {
                    await Task.Delay(_options.ListenReconnectDelay, _timeProvider, cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private static NpgsqlBatchCommand Command(string sql, params NpgsqlParameter[] parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.AddRange(parameters);
        return command;
    }

    private static async Task<int> ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params NpgsqlParameter[] parameters)
    {
#pragma warning disable CA2100 // SQL text is a constant of this class; values are parameters.
        await using var command = new NpgsqlCommand(sql, connection);
#pragma warning restore CA2100
        command.Parameters.AddRange(parameters);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
#pragma warning disable CA2100 // SQL text is a constant of this class.
        await using var command = new NpgsqlCommand(sql, connection);
#pragma warning restore CA2100
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return value is DBNull ? null : value;
    }

    private static NpgsqlParameter Text(string? value) => new() { NpgsqlDbType = NpgsqlDbType.Text, Value = (object?)value ?? DBNull.Value };

    private static NpgsqlParameter Json(string? value) => new() { NpgsqlDbType = NpgsqlDbType.Jsonb, Value = (object?)value ?? DBNull.Value };

    private static NpgsqlParameter Int(int value) => new NpgsqlParameter<int> { NpgsqlDbType = NpgsqlDbType.Integer, TypedValue = value };

    private static NpgsqlParameter Long(long value) => new NpgsqlParameter<long> { NpgsqlDbType = NpgsqlDbType.Bigint, TypedValue = value };

    private static NpgsqlParameter Interval(TimeSpan value) => new NpgsqlParameter<TimeSpan> { NpgsqlDbType = NpgsqlDbType.Interval, TypedValue = value };

    private static NpgsqlParameter Timestamp(DateTimeOffset? value)
        => new() { NpgsqlDbType = NpgsqlDbType.TimestampTz, Value = value is { } v ? v.ToUniversalTime() : DBNull.Value };

    private static NpgsqlParameter TextArray(string[] values) => new() { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = values };

    private static NpgsqlParameter LongArray(long[] values) => new() { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint, Value = values };

    [GeneratedRegex("^[a-z_][a-z0-9_]{0,40}$")]
    private static partial Regex SchemaName();

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Runtime schema migrated to version {Version}: {Description}")]
        public static partial void Migrated(ILogger logger, int version, string description);

        [LoggerMessage(2, LogLevel.Debug, "Listening for runtime notifications in schema {Schema}")]
        public static partial void Listening(ILogger logger, string schema);

        [LoggerMessage(3, LogLevel.Warning, "The notification connection broke; polling continues while it reconnects")]
        public static partial void ListenFailed(ILogger logger, Exception exception);
    }
}
