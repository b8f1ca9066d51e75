using System.Text.Json;
using Drydock.Runtime.Client;
using Drydock.Runtime.Hosting;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Drydock.Runtime.Tests;

/// <summary>The pure side of the runtime: handlers, the processor, the type registry. No database, no clock.</summary>
public sealed class GrainHandlerTests
{
    private static readonly GrainId Self = new(TestGrainHandler.DefaultKind, "unit");
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly MessageTypeRegistry _messages = TestGrainHandler.Messages();

    private StoredMessage Row(long id, object message, string? replyTo = null, int attempts = 0)
    {
        var body = _messages.Serialize(message);
        return new StoredMessage(id, body.TypeName, body.TypeVersion, body.Json, Now, null, replyTo, attempts);
    }

    private static TestState ReadState(TurnOutput output) => JsonSerializer.Deserialize(output.StateJson!, TestJsonContext.Default.TestState)!;

    [Fact]
    public void Processor_AppliesMessagesInOrder_OneTurnEach()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [Row(1, new Add(1)), Row(2, new Add(2)), Row(3, new Add(3))], Now));
        Assert.Equal([1L, 2L, 3L], output.Consumed);
        Assert.Equal([1L, 2L, 3L], ReadState(output).Seqs);
        Assert.Equal(TestState.TypeName, output.StateType);
        Assert.Null(output.Failure);
    }

    [Fact]
    public void Processor_HandlerThrowsMidBatch_KeepsThePrefix_AndStopsAtTheFailedMessage()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [Row(1, new Add(1)), Row(2, new Boom()), Row(3, new Add(2))], Now));
        Assert.Equal([1L], output.Consumed);
        Assert.Equal(new FailedMessage(2, "InvalidOperationException: boom", Permanent: false), output.Failure);
        Assert.Equal(1, ReadState(output).Count);
    }

    [Fact]
    public void Processor_UnknownMessageType_IsAPermanentFailure()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [new StoredMessage(7, "test.nope", 1, "{}", Now, null, null, 0)], Now));
        Assert.Empty(output.Consumed);
        Assert.True(output.Failure!.Permanent);
        Assert.Null(output.StateJson);
    }

    [Fact]
    public void Processor_NewerMessageVersion_IsAPermanentFailure()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [new StoredMessage(7, Add.TypeName, 2, "{\"seq\":1}", Now, null, null, 0)], Now));
        Assert.True(output.Failure!.Permanent);
        Assert.Contains("version 2", output.Failure.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Processor_Request_GetsTheTypedReply_AndARequestWithoutReplyGetsAnEmptyOne()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [Row(1, new Add(1)), Row(2, new GetCount(), "req-1"), Row(3, new Add(2), "req-2")], Now));
        Assert.Equal(2, output.Replies.Count);
        Assert.Equal(new CountReply(1, 1), _messages.Deserialize(output.Replies[0].TypeName!, output.Replies[0].TypeVersion, output.Replies[0].Body!));
        Assert.Equal(new StoredReply("req-2", null, 0, null, null), output.Replies[1]);
    }

    [Fact]
    public void Processor_EffectIdsWithoutAnExplicitId_AreAFunctionOfGrainVersionAndPosition()
    {
        var processor = new EffectOnlyHandler().CreateProcessor(_messages, 4);
        var input = new TurnInput(new GrainId("fx-unit", "k"), null, null, 0, 41, [Row(1, new Add(1))], Now);
        var first = processor.Process(input);
        var again = processor.Process(input);
        Assert.Equal(["fx-unit/k/42/0", "fx-unit/k/42/1"], first.Effects.Select(e => e.EffectId));
        Assert.Equal(first.Effects, again.Effects);
        Assert.All(first.Effects, e => Assert.Equal(4, e.MaxAttempts));
        Assert.Equal("h9", first.Effects[1].Host);
    }

    [Fact]
    public void Processor_StoredStateAtANewerSchema_FailsTheTransaction()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var input = new TurnInput(Self, "{}", TestState.TypeName, TestState.SchemaVersion + 1, 3, [Row(1, new Add(1))], Now);
        Assert.Throws<GrainSchemaVersionException>(() => processor.Process(input));
    }

    [Fact]
    public void Processor_DelayedAndScheduledMessages_CarryTheirDueTimes()
    {
        var processor = new TestGrainHandler().CreateProcessor(_messages, 5);
        var output = processor.Process(new TurnInput(Self, null, null, 0, 0, [Row(1, new SetTimer(250))], Now));
        var tick = Assert.Single(output.Outgoing);
        Assert.Equal(Self, tick.Target);
        Assert.Equal(TimeSpan.FromMilliseconds(250), tick.Delay);
        Assert.False(tick.DueNow);
    }

    [Fact]
    public void Registry_UpgradesAnOlderVersion_WhenAnUpgradeIsRegistered()
    {
        var registry = new MessageTypeRegistry().Add(TestJsonContext.Default.Add, (version, json) => new Add(json.GetProperty("n").GetInt64() * 10));
        Assert.Throws<GrainSchemaVersionException>(() => registry.Deserialize(Add.TypeName, 2, "{}"));
        Assert.Equal(new Add(30), registry.Deserialize(Add.TypeName, 0, "{\"n\":3}"));
    }

    [Fact]
    public void Registry_RefusesOneNameForTwoTypes()
    {
        var registry = new MessageTypeRegistry().Add(TestJsonContext.Default.Add);
        Assert.Throws<ArgumentException>(() => registry.Add(ClashingContext.Default.Clash));
    }

    [Fact]
    public void Registry_UnregisteredType_IsATypedError()
        => Assert.Throws<UnknownGrainTypeException>(() => new MessageTypeRegistry().Serialize(new Add(1)));

    [Theory]
    [InlineData("", "k")]
    [InlineData("Upper", "k")]
    [InlineData("with space", "k")]
    [InlineData("k", "")]
    public void GrainId_RejectsBadKindsAndKeys(string kind, string key)
        => Assert.ThrowsAny<ArgumentException>(() => new GrainId(kind, key));

    [Fact]
    public void Options_RejectAWorkerWithoutAHost()
        => Assert.Throws<ArgumentException>(() => new ServiceCollection().AddDrydockRuntime(o => o.Role = SiloRole.Worker));

    [Fact]
    public async Task ServiceCollection_ComposesSiloAndClientOverTheSqliteStore()
    {
        var directory = Directory.CreateTempSubdirectory("drydock-di-").FullName;
        try
        {
            await using var provider = new ServiceCollection()
                .AddLogging()
                .AddDrydockRuntime(o => o.HypervisorHost = "h1", r => r.Add(TestJsonContext.Default.Add))
                .AddDrydockRuntimeSqlite(o => o.DatabasePath = Path.Combine(directory, "di.db"))
                .AddGrainHandler<TestGrainHandler>()
                .BuildServiceProvider();
            var store = provider.GetRequiredService<IRuntimeStore>();
            await store.MigrateAsync(TestContext.Current.CancellationToken);
            var silo = provider.GetRequiredService<GrainSilo>();
            await silo.StartAsync(TestContext.Current.CancellationToken);
            var client = provider.GetRequiredService<GrainClient>();
            await client.SendAsync(Self, new Add(1), cancellationToken: TestContext.Current.CancellationToken);
            var state = await Wait.UntilAsync(() => client.GetStateAsync(Self, TestJsonContext.Default.TestState, TestContext.Current.CancellationToken), s => s?.Count == 1, "the turn");
            Assert.Equal([1L], state!.Seqs);
            await silo.StopAsync(TestContext.Current.CancellationToken);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(directory, recursive: true);
        }
    }

    private sealed class EffectOnlyHandler() : GrainHandler<TestState>("fx-unit", TestJsonContext.Default.TestState)
    {
        public override TestState CreateInitial(GrainId id) => TestState.Empty;

        public override TurnResult<TestState> Handle(TestState state, GrainEnvelope envelope, TurnContext context)
            => TurnResult.Of(state).Effect("h1", new TestEffect("a", "ok")).Effect("h9", new TestEffect("b", "ok"));
    }
}

// A second CLR type claiming the stable name of Add.
public sealed record Clash(long Seq) : IGrainMessage
{
    public static string TypeName => Add.TypeName;

    public static int TypeVersion => 1;
}

[System.Text.Json.Serialization.JsonSerializable(typeof(Clash))]
internal sealed partial class ClashingContext : System.Text.Json.Serialization.JsonSerializerContext;
