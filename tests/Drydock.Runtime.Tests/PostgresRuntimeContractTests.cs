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

    [Fact]
    public async Task WithoutListen_PollingAloneStillDeliversMessagesAndReplies()
    {
        await using var store = new PostgresRuntimeStore(
            new PostgresRuntimeStoreOptions { ConnectionString = _connectionString, Listen = false },
            TimeProvider.System,
            NullLogger<PostgresRuntimeStore>.Instance);
        await using var silo = new Hosting.GrainSilo(store, [new TestGrainHandler()], [], Messages, FastOptions(), TimeProvider.System, NullLogger<Hosting.GrainSilo>.Instance);
        await silo.StartAsync(TestContext.Current.CancellationToken);
        var client = new Client.GrainClient(store, Messages, TimeProvider.System, new Client.GrainClientOptions { ReplyPollInterval = TimeSpan.FromMilliseconds(100) });
        await client.SendAsync(Grain("poll"), new Add(1), cancellationToken: TestContext.Current.CancellationToken);
        var reply = await client.CallAsync<CountReply>(Grain("poll"), new GetCount(), TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        Assert.Equal(new CountReply(1, 1), reply);
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
