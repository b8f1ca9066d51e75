namespace Drydock.Runtime.Sqlite;

/// <summary>Options of the embedded SQLite store.</summary>
public sealed class SqliteRuntimeStoreOptions
{
    /// <summary>Path of the database file. Required; no default. The file is created when missing.</summary>
    public string DatabasePath { get; set; } = "";

    /// <summary>
    /// SQLite <c>synchronous</c> level in WAL mode. Default <c>FULL</c> (every commit survives power loss);
    /// <c>NORMAL</c> survives process crashes but may lose the last commits on power loss.
    /// </summary>
    public string Synchronous { get; set; } = "FULL";

    /// <summary>How long a statement waits for a lock held by another connection. Default 30 seconds.</summary>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
