using Drydock.Runtime.Storage;

namespace Drydock.Runtime.Sqlite;

/// <summary>The SQLite schema, step by step. Times are Unix milliseconds from the injected <see cref="TimeProvider"/>.</summary>
internal static class SqliteMigrations
{
    public static IReadOnlyList<Migration> All { get; } =
    [
        new Migration(1, "silos, grains, inbox, idempotency keys, work, replies, dead letters", """
            CREATE TABLE silos (
                silo_id TEXT PRIMARY KEY,
                role INTEGER NOT NULL,
                hypervisor_host TEXT,
                machine TEXT NOT NULL,
                process_id INTEGER NOT NULL,
                status INTEGER NOT NULL,
                started_at INTEGER NOT NULL,
                heartbeat_at INTEGER NOT NULL);
            CREATE TABLE grains (
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                state TEXT,
                state_type TEXT,
                schema_version INTEGER NOT NULL DEFAULT 0,
                version INTEGER NOT NULL DEFAULT 0,
                owner TEXT,
                epoch INTEGER NOT NULL DEFAULT 0,
                lease_until INTEGER,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (kind, key)) WITHOUT ROWID;
            CREATE TABLE inbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                type TEXT NOT NULL,
                type_version INTEGER NOT NULL,
                body TEXT NOT NULL,
                due_at INTEGER NOT NULL,
                enqueued_at INTEGER NOT NULL,
                idempotency_key TEXT,
                reply_to TEXT,
                attempts INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX inbox_grain ON inbox (kind, key, id);
            CREATE INDEX inbox_due ON inbox (due_at, id);
            CREATE TABLE idempotency_keys (
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (kind, key, idempotency_key)) WITHOUT ROWID;
            CREATE TABLE work (
                effect_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                host TEXT NOT NULL,
                type TEXT NOT NULL,
                type_version INTEGER NOT NULL,
                body TEXT NOT NULL,
                status INTEGER NOT NULL,
                owner TEXT,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                lease_until INTEGER,
                not_before INTEGER NOT NULL,
                error TEXT,
                created_at INTEGER NOT NULL,
                finished_at INTEGER);
            CREATE INDEX work_claim ON work (host, status, not_before);
            CREATE INDEX work_grain ON work (kind, key);
            CREATE TABLE replies (
                request_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                type TEXT,
                type_version INTEGER NOT NULL,
                body TEXT,
                error TEXT,
                created_at INTEGER NOT NULL);
            CREATE TABLE dead_letters (
                id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                type TEXT NOT NULL,
                type_version INTEGER NOT NULL,
                body TEXT NOT NULL,
                error TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                reply_to TEXT,
                failed_at INTEGER NOT NULL);
            CREATE INDEX dead_letters_grain ON dead_letters (kind, key);
            """),
        new Migration(2, "index grains by owner (failure detection, leave)", """
            CREATE INDEX grains_owner ON grains (owner) WHERE owner IS NOT NULL;
            """),
    ];
}
