using Drydock.Runtime.Storage;

namespace Drydock.Runtime.PostgreSql;

/// <summary>The PostgreSQL schema, step by step. Times are the database clock (<c>now()</c>), so leases, due times and
/// heartbeats never depend on a host's clock (FAULTS F46).</summary>
internal static class PostgresMigrations
{
    public static IReadOnlyList<Migration> All { get; } =
    [
        new Migration(1, "silos, grains, inbox, idempotency keys, work, replies, dead letters", """
            CREATE TABLE silos (
                silo_id text PRIMARY KEY,
                role int NOT NULL,
                hypervisor_host text,
                machine text NOT NULL,
                process_id int NOT NULL,
                status int NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                heartbeat_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE grains (
                kind text NOT NULL,
                key text NOT NULL,
                state jsonb,
                state_type text,
                schema_version int NOT NULL DEFAULT 0,
                version bigint NOT NULL DEFAULT 0,
                owner text,
                epoch bigint NOT NULL DEFAULT 0,
                lease_until timestamptz,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (kind, key));
            CREATE TABLE inbox (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                kind text NOT NULL,
                key text NOT NULL,
                type text NOT NULL,
                type_version int NOT NULL,
                body jsonb NOT NULL,
                due_at timestamptz NOT NULL,
                enqueued_at timestamptz NOT NULL DEFAULT now(),
                idempotency_key text,
                reply_to text,
                attempts int NOT NULL DEFAULT 0);
            CREATE INDEX inbox_grain ON inbox (kind, key, id);
            CREATE INDEX inbox_due ON inbox (due_at, id);
            CREATE TABLE idempotency_keys (
                kind text NOT NULL,
                key text NOT NULL,
                idempotency_key text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (kind, key, idempotency_key));
            CREATE TABLE work (
                effect_id text PRIMARY KEY,
                kind text NOT NULL,
                key text NOT NULL,
                host text NOT NULL,
                type text NOT NULL,
                type_version int NOT NULL,
                body jsonb NOT NULL,
                status int NOT NULL,
                owner text,
                attempt int NOT NULL DEFAULT 0,
                max_attempts int NOT NULL,
                lease_until timestamptz,
                not_before timestamptz NOT NULL DEFAULT now(),
                error text,
                created_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz);
            CREATE INDEX work_claim ON work (host, status, not_before);
            CREATE INDEX work_grain ON work (kind, key);
            CREATE TABLE replies (
                request_id text PRIMARY KEY,
                kind text NOT NULL,
                key text NOT NULL,
                type text,
                type_version int NOT NULL,
                body jsonb,
                error text,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE dead_letters (
                id bigint PRIMARY KEY,
                kind text NOT NULL,
                key text NOT NULL,
                type text NOT NULL,
                type_version int NOT NULL,
                body jsonb NOT NULL,
                error text NOT NULL,
                attempts int NOT NULL,
                reply_to text,
                failed_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX dead_letters_grain ON dead_letters (kind, key);
            """),
        new Migration(2, "index grains by owner (failure detection, leave)", """
            CREATE INDEX grains_owner ON grains (owner) WHERE owner IS NOT NULL;
            """),
    ];
}
