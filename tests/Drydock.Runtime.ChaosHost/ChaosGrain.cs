using System.Text.Json.Serialization;
using Drydock.Runtime.Hosting;

namespace Drydock.Runtime.ChaosHost;

/// <summary>What a chaos grain remembers: enough to prove per-grain order and exactly-once.</summary>
public sealed record ChaosState(long Count, long LastSeq, int Violations, IReadOnlyList<string> Completed) : IGrainState
{
    public static string TypeName => "chaos.state";

    public static int SchemaVersion => 1;
}

/// <summary>The n-th message to a grain; sequence numbers start at 1 and have no gaps.</summary>
public sealed record ChaosAdd(long Seq) : IGrainMessage
{
    public static string TypeName => "chaos.add";

    public static int TypeVersion => 1;
}

/// <summary>Asks the grain to request one effect on <paramref name="Host"/>.</summary>
public sealed record ChaosStartEffect(string Host, string Name) : IGrainMessage
{
    public static string TypeName => "chaos.start-effect";

    public static int TypeVersion => 1;
}

/// <summary>The effect payload.</summary>
public sealed record ChaosWork(string Name) : IGrainMessage
{
    public static string TypeName => "chaos.work";

    public static int TypeVersion => 1;
}

/// <summary>A read-only request answered with the count.</summary>
public sealed record ChaosGet : IGrainMessage
{
    public static string TypeName => "chaos.get";

    public static int TypeVersion => 1;
}

/// <summary>The answer to <see cref="ChaosGet"/>.</summary>
public sealed record ChaosCount(long Count) : IGrainMessage
{
    public static string TypeName => "chaos.count";

    public static int TypeVersion => 1;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ChaosState))]
[JsonSerializable(typeof(ChaosAdd))]
[JsonSerializable(typeof(ChaosStartEffect))]
[JsonSerializable(typeof(ChaosWork))]
[JsonSerializable(typeof(ChaosGet))]
[JsonSerializable(typeof(ChaosCount))]
public sealed partial class ChaosJsonContext : JsonSerializerContext;

/// <summary>The pure chaos grain.</summary>
public sealed class ChaosGrainHandler() : GrainHandler<ChaosState>(KindName, ChaosJsonContext.Default.ChaosState)
{
    public const string KindName = "chaos";

    public static MessageTypeRegistry Messages()
        => new MessageTypeRegistry()
            .Add(ChaosJsonContext.Default.ChaosAdd)
            .Add(ChaosJsonContext.Default.ChaosStartEffect)
            .Add(ChaosJsonContext.Default.ChaosWork)
            .Add(ChaosJsonContext.Default.ChaosGet)
            .Add(ChaosJsonContext.Default.ChaosCount);

    public override ChaosState CreateInitial(GrainId id) => new(0, 0, 0, []);

    public override TurnResult<ChaosState> Handle(ChaosState state, GrainEnvelope envelope, TurnContext context) => envelope.Message switch
    {
        ChaosAdd add => TurnResult.Of(state with
        {
            Count = state.Count + 1,
            LastSeq = add.Seq,
            Violations = state.Violations + (add.Seq == state.LastSeq + 1 ? 0 : 1),
        }),
        ChaosStartEffect start => TurnResult.Of(state).Effect(start.Host, new ChaosWork(start.Name), effectId: $"{context.Self.Key}:{start.Name}"),
        EffectCompleted done => TurnResult.Of(state with { Completed = [.. state.Completed, done.EffectId] }),
        EffectFailed failed => TurnResult.Of(state with { Completed = [.. state.Completed, "failed:" + failed.EffectId] }),
        ChaosGet => TurnResult.Of(state).WithReply(new ChaosCount(state.Count)),
        _ => throw new InvalidOperationException($"unexpected {envelope.TypeName}"),
    };
}

/// <summary>
/// A deliberately stubborn effect: it sleeps for a fixed time and ignores cancellation, like a side effect that
/// cannot be called back. Its result must then be judged by the store's fence, not by the silo.
/// </summary>
public sealed class ChaosWorkExecutor(TimeSpan duration) : IEffectExecutor
{
    public string EffectType => ChaosWork.TypeName;

    public async Task<EffectOutcome> ExecuteAsync(EffectContext context, CancellationToken cancellationToken = default)
    {
        Output.Line($"effect-start {context.EffectId} {context.Attempt}");
#pragma warning disable CA2016 // Deliberately not cancellable: see the type's comment.
        await Task.Delay(duration);
#pragma warning restore CA2016
        Output.Line($"effect-end {context.EffectId} {context.Attempt}");
        return EffectOutcome.Success();
    }
}

/// <summary>Line-at-a-time stdout for the test that reads it.</summary>
public static class Output
{
    private static readonly Lock Gate = new();

    public static void Line(string line)
    {
        lock (Gate)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }
}
