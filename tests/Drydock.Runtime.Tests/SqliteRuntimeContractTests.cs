using Drydock.Runtime.Sqlite;
using Drydock.Runtime.Storage;
using Microsoft.Data.Sqlite;

namespace Drydock.Runtime.Tests;

public sealed class SqliteRuntimeContractTests : RuntimeContractTests
{
    private readonly string _directory = Directory.CreateTempSubdirectory("drydock-sqlite-").FullName;

    private string DatabasePath => Path.Combine(_directory, "runtime.db");

    protected override int LatestSchemaVersion => SqliteRuntimeStore.LatestSchemaVersion;

    protected override string NowSql => "0";

    protected override Task<IRuntimeStore> CreateStoreAsync()
        => Task.FromResult<IRuntimeStore>(new SqliteRuntimeStore(new SqliteRuntimeStoreOptions { DatabasePath = DatabasePath, Synchronous = "NORMAL" }, TimeProvider.System));

    protected override async Task ExecuteSqlAsync(string sql)
    {
        await using var connection = new SqliteConnection($"Data Source={DatabasePath};Pooling=false");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
#pragma warning disable CA2100 // Test SQL.
        command.CommandText = sql;
#pragma warning restore CA2100
        await command.ExecuteNonQueryAsync();
    }

    protected override ValueTask CleanupAsync()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }
}
