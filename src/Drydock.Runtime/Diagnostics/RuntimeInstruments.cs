using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Drydock.Runtime.Diagnostics;

/// <summary>
/// The runtime's metrics, on the meter <c>Drydock.Runtime</c> (wire it to OpenTelemetry with
/// <c>AddMeter("Drydock.Runtime")</c>). Instruments: <c>drydock.runtime.turns</c>,
/// <c>drydock.runtime.turn.duration</c>, <c>drydock.runtime.queue.depth</c>, <c>drydock.runtime.takeovers</c>,
/// <c>drydock.runtime.fenced</c>, <c>drydock.runtime.effects</c>, <c>drydock.runtime.dead_letters</c>.
/// </summary>
public static class RuntimeInstruments
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "Drydock.Runtime";

    private static readonly Meter Meter = new(MeterName, typeof(RuntimeInstruments).Assembly.GetName().Version?.ToString());

    private static readonly Counter<long> Turns = Meter.CreateCounter<long>(
        "drydock.runtime.turns", unit: "{turn}", description: "Messages handled by grain turns that committed.");

    private static readonly Histogram<double> TurnDuration = Meter.CreateHistogram<double>(
        "drydock.runtime.turn.duration", unit: "ms", description: "Duration of a turn transaction, from begin to commit.");

    private static readonly Counter<long> Takeovers = Meter.CreateCounter<long>(
        "drydock.runtime.takeovers", unit: "{grain}", description: "Grains claimed from another silo whose lease had expired (epoch + 1).");

    private static readonly Counter<long> Fenced = Meter.CreateCounter<long>(
        "drydock.runtime.fenced", unit: "{operation}", description: "Commits or effect results rejected because the owner or epoch/attempt no longer matched.");

    private static readonly Counter<long> Effects = Meter.CreateCounter<long>(
        "drydock.runtime.effects", unit: "{effect}", description: "Effect attempts that ended, by outcome.");

    private static readonly Counter<long> DeadLetters = Meter.CreateCounter<long>(
        "drydock.runtime.dead_letters", unit: "{message}", description: "Messages moved to the dead letters.");

    private static readonly object GaugeLock = new();
    private static readonly List<Func<Storage.QueueDepth>> DepthSources = [];

    static RuntimeInstruments()
    {
        Meter.CreateObservableGauge(
            "drydock.runtime.queue.depth",
            ObserveDepth,
            unit: "{item}",
            description: "Messages in inboxes and effects not finished, as last sampled by each silo.");
    }

    internal static void RecordTurns(string provider, string kind, int count, TimeSpan duration)
    {
        var tags = new TagList { { "provider", provider }, { "kind", kind } };
        Turns.Add(count, tags);
        TurnDuration.Record(duration.TotalMilliseconds, tags);
    }

    internal static void RecordTakeover(string provider, string kind) => Takeovers.Add(1, new TagList { { "provider", provider }, { "kind", kind } });

    internal static void RecordFenced(string provider, string what) => Fenced.Add(1, new TagList { { "provider", provider }, { "what", what } });

    internal static void RecordEffect(string provider, string type, string outcome) => Effects.Add(1, new TagList { { "provider", provider }, { "type", type }, { "outcome", outcome } });

    internal static void RecordDeadLetters(string provider, string kind, int count) => DeadLetters.Add(count, new TagList { { "provider", provider }, { "kind", kind } });

    internal static IDisposable RegisterDepthSource(Func<Storage.QueueDepth> source)
    {
        lock (GaugeLock)
        {
            DepthSources.Add(source);
        }

        return new Registration(source);
    }

    private static IEnumerable<Measurement<long>> ObserveDepth()
    {
        Func<Storage.QueueDepth>[] sources;
        lock (GaugeLock)
        {
            sources = [.. DepthSources];
        }

        foreach (var source in sources)
        {
            var depth = source();
            yield return new Measurement<long>(depth.Inbox, new KeyValuePair<string, object?>("queue", "inbox"));
            yield return new Measurement<long>(depth.Work, new KeyValuePair<string, object?>("queue", "work"));
        }
    }

    private sealed class Registration(Func<Storage.QueueDepth> source) : IDisposable
    {
        public void Dispose()
        {
            lock (GaugeLock)
            {
                DepthSources.Remove(source);
            }
        }
    }
}
