using Drydock.Runtime.PostgreSql;
using Drydock.Runtime.Storage;
using Drydock.TestKit.Postgres;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Xunit;

namespace Drydock.Runtime.Tests;

[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServerFixture>
{
    public const string Name = "postgres";
}

[Collection(PostgresCollection.Name)]
public sealed class PostgresRuntimeContractTests(PostgresServerFixture postgres) : RuntimeContractTests
{
    private string _connectionString = "";

    protected override int LatestSchemaVersion => PostgresRuntimeStore.LatestSchemaVersion;

    protected override string NowSql => "now()";

    protected override async Task<IRuntimeStore> CreateStoreAsync()
    {
        _connectionString = await postgres.CreateDatabaseAsync("contract");
        return new PostgresRuntimeStore(new PostgresRuntimeStoreOptions { ConnectionString = _connectionString }, TimeProvider.System, NullLogger<PostgresRuntimeStore>.Instance);
    }

    protected override async Task ExecuteSqlAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(_connectionString + ";Search Path=drydock");
        await connection.OpenAsync();
#pragma warning disable CA2100 // Test SQL.
        await using var command = new NpgsqlCommand(sql, connection);
#pragma warning restore CA2100
        await command.ExecuteNonQueryAsync();
    }
}
