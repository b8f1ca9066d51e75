using System.Text.Json.Serialization;

namespace Drydock.Benchmarks.Runtime;

public sealed record BenchState(long Count, long LastSeq, long Sum) : IGrainState
{
    public static string TypeName => "bench.state";

    public static int SchemaVersion => 1;
}

public sealed record BenchAdd(long Seq, long Value) : IGrainMessage
{
    public static string TypeName => "bench.add";

    public static int TypeVersion => 1;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(BenchState))]
[JsonSerializable(typeof(BenchAdd))]
internal sealed partial class BenchJsonContext : JsonSerializerContext;

/// <summary>The pure handler measured both in the runtime and in the in-memory loop.</summary>
public sealed class BenchGrainHandler() : GrainHandler<BenchState>(KindName, BenchJsonContext.Default.BenchState)
{
    public const string KindName = "bench";

    public static MessageTypeRegistry Messages() => new MessageTypeRegistry().Add(BenchJsonContext.Default.BenchAdd);

    public override BenchState CreateInitial(GrainId id) => new(0, 0, 0);

    public override TurnResult<BenchState> Handle(BenchState state, GrainEnvelope envelope, TurnContext context)
        => envelope.Message is BenchAdd add
            ? TurnResult.Of(state with { Count = state.Count + 1, LastSeq = add.Seq, Sum = state.Sum + add.Value })
            : throw new InvalidOperationException(envelope.TypeName);
}
