namespace Drydock.Runtime.PostgreSql;

/// <summary>Options of the PostgreSQL store.</summary>
public sealed class PostgresRuntimeStoreOptions
{
    /// <summary>Npgsql connection string. Required; no default.</summary>
    public string ConnectionString { get; set; } = "";

    /// <summary>Schema holding the runtime's tables; created by the first migration. Default <c>drydock</c>.</summary>
    public string Schema { get; set; } = "drydock";

    /// <summary>
    /// Server-side <c>idle_in_transaction_session_timeout</c> for the runtime's sessions. A paused (SIGSTOP) or
    /// partitioned process cannot sit on row locks longer than this: the server aborts its transaction, the locks
    /// go, and the epoch check rejects whatever it tries afterwards. Default 10 seconds.
    /// </summary>
    public TimeSpan IdleInTransactionTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Keep a LISTEN connection for wake-ups. Default true. Without it, silos and callers find new work by
    /// polling alone (<c>GrainRuntimeOptions.PollInterval</c>), e.g. behind a pooler that cannot LISTEN.
    /// </summary>
    public bool Listen { get; set; } = true;

    /// <summary>Delay before the LISTEN connection retries after it broke (polling covers the gap). Default 1 second.</summary>
    public TimeSpan ListenReconnectDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Command timeout. Default 30 seconds.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
