using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using Drydock.Runtime.Hosting;

namespace Drydock.Runtime.Tests;

public sealed record TestState(long Count, long LastSeq, int Violations, int Ticks, IReadOnlyList<long> Seqs, IReadOnlyList<string> Completed, IReadOnlyList<string> Failed) : IGrainState
{
    public static string TypeName => "test.state";

    public static int SchemaVersion => 2;

    public static TestState Empty { get; } = new(0, 0, 0, 0, [], [], []);
}

// The same state at schema 1, to test upgrades: it only had a total.
public sealed record TestStateV1(long Total) : IGrainState
{
    public static string TypeName => "test.state";

    public static int SchemaVersion => 1;
}

public sealed record Add(long Seq) : IGrainMessage
{
    public static string TypeName => "test.add";

    public static int TypeVersion => 1;
}

public sealed record Relay(string TargetKey, long Seq) : IGrainMessage
{
    public static string TypeName => "test.relay";

    public static int TypeVersion => 1;
}

public sealed record SetTimer(int DelayMs) : IGrainMessage
{
    public static string TypeName => "test.set-timer";

    public static int TypeVersion => 1;
}

public sealed record Tick : IGrainMessage
{
    public static string TypeName => "test.tick";

    public static int TypeVersion => 1;
}

public sealed record GetCount : IGrainMessage
{
    public static string TypeName => "test.get-count";

    public static int TypeVersion => 1;
}

public sealed record CountReply(long Count, long LastSeq) : IGrainMessage
{
    public static string TypeName => "test.count-reply";

    public static int TypeVersion => 1;
}

public sealed record Boom : IGrainMessage
{
    public static string TypeName => "test.boom";

    public static int TypeVersion => 1;
}

public sealed record StartEffect(string Host, string Name, string Mode, int? MaxAttempts) : IGrainMessage
{
    public static string TypeName => "test.start-effect";

    public static int TypeVersion => 1;
}

public sealed record TestEffect(string Name, string Mode) : IGrainMessage
{
    public static string TypeName => "test.effect";

    public static int TypeVersion => 1;
}

public sealed record TestEffectResult(string Name, string Host) : IGrainMessage
{
    public static string TypeName => "test.effect-result";

    public static int TypeVersion => 1;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(TestState))]
[JsonSerializable(typeof(TestStateV1))]
[JsonSerializable(typeof(Add))]
[JsonSerializable(typeof(Relay))]
[JsonSerializable(typeof(SetTimer))]
[JsonSerializable(typeof(Tick))]
[JsonSerializable(typeof(GetCount))]
[JsonSerializable(typeof(CountReply))]
[JsonSerializable(typeof(Boom))]
[JsonSerializable(typeof(StartEffect))]
[JsonSerializable(typeof(TestEffect))]
[JsonSerializable(typeof(TestEffectResult))]
internal sealed partial class TestJsonContext : JsonSerializerContext;

/// <summary>A pure test grain: counts sequenced adds, checks their order, relays, sets timers, asks for effects.</summary>
public sealed class TestGrainHandler(string kind = TestGrainHandler.DefaultKind) : GrainHandler<TestState>(kind, TestJsonContext.Default.TestState)
{
    public const string DefaultKind = "test";

    public static MessageTypeRegistry Messages()
        => new MessageTypeRegistry()
            .Add(TestJsonContext.Default.Add)
            .Add(TestJsonContext.Default.Relay)
            .Add(TestJsonContext.Default.SetTimer)
            .Add(TestJsonContext.Default.Tick)
            .Add(TestJsonContext.Default.GetCount)
            .Add(TestJsonContext.Default.CountReply)
            .Add(TestJsonContext.Default.Boom)
            .Add(TestJsonContext.Default.StartEffect)
            .Add(TestJsonContext.Default.TestEffect)
            .Add(TestJsonContext.Default.TestEffectResult);

    public override TestState CreateInitial(GrainId id) => TestState.Empty;

    public override TestState UpgradeState(int storedVersion, JsonElement state)
        => storedVersion == 1
            ? TestState.Empty with { Count = state.Deserialize(TestJsonContext.Default.TestStateV1)!.Total }
            : base.UpgradeState(storedVersion, state);

    public override TurnResult<TestState> Handle(TestState state, GrainEnvelope envelope, TurnContext context) => envelope.Message switch
    {
        Add add => TurnResult.Of(state with
        {
            Count = state.Count + 1,
            LastSeq = add.Seq,
            Violations = state.Violations + (add.Seq == state.LastSeq + 1 ? 0 : 1),
            Seqs = [.. state.Seqs, add.Seq],
        }),
        Relay relay => TurnResult.Of(state).Send(new GrainId(context.Self.Kind, relay.TargetKey), new Add(relay.Seq)),
        SetTimer timer => TurnResult.Of(state).Send(context.Self, new Tick(), TimeSpan.FromMilliseconds(timer.DelayMs)),
        Tick => TurnResult.Of(state with { Ticks = state.Ticks + 1 }),
        GetCount => TurnResult.Of(state).WithReply(new CountReply(state.Count, state.LastSeq)),
        Boom => throw new InvalidOperationException("boom"),
        StartEffect start => TurnResult.Of(state).Effect(start.Host, new TestEffect(start.Name, start.Mode), effectId: $"{context.Self.Key}:{start.Name}", maxAttempts: start.MaxAttempts),
        EffectCompleted done => TurnResult.Of(state with { Completed = [.. state.Completed, done.EffectId] }),
        EffectFailed failed => TurnResult.Of(state with { Failed = [.. state.Failed, failed.EffectId] }),
        _ => throw new InvalidOperationException($"unexpected {envelope.TypeName}"),
    };
}

/// <summary>Writes the state at schema 1, to test that a newer handler upgrades it.</summary>
public sealed class TestGrainHandlerV1() : GrainHandler<TestStateV1>(TestGrainHandler.DefaultKind, TestJsonContext.Default.TestStateV1)
{
    public override TestStateV1 CreateInitial(GrainId id) => new(0);

    public override TurnResult<TestStateV1> Handle(TestStateV1 state, GrainEnvelope envelope, TurnContext context)
        => TurnResult.Of(state with { Total = state.Total + 10 });
}

/// <summary>Runs test effects: "ok" succeeds, "retry" always asks for a retry, "fail" fails for good.</summary>
public sealed class TestEffectExecutor : IEffectExecutor
{
    public ConcurrentQueue<(string EffectId, string Host, int Attempt)> Runs { get; } = new();

    public string EffectType => TestEffect.TypeName;

    public Task<EffectOutcome> ExecuteAsync(EffectContext context, CancellationToken cancellationToken = default)
    {
        Runs.Enqueue((context.EffectId, context.Host, context.Attempt));
        var effect = (TestEffect)context.Payload;
        return Task.FromResult(effect.Mode switch
        {
            "ok" => EffectOutcome.Success(new TestEffectResult(effect.Name, context.Host)),
            "retry" => EffectOutcome.Retry("try again"),
            _ => EffectOutcome.Fail("no"),
        });
    }
}
