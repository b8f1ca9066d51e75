using System.Diagnostics.Metrics;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd;

/// <summary>Metrics of the NBD library: meter <c>Drydock.Nbd</c>.</summary>
public static class NbdInstruments
{
    /// <summary>The meter name to subscribe to.</summary>
    public const string MeterName = "Drydock.Nbd";

    private static readonly Meter Meter = new(MeterName);

    private static readonly Histogram<double> RequestDuration = Meter.CreateHistogram<double>(
        "drydock.nbd.request.duration", unit: "s", description: "Time from sending an NBD request to its complete reply.");

    private static readonly Counter<long> BytesRead = Meter.CreateCounter<long>(
        "drydock.nbd.bytes.read", unit: "By", description: "Payload bytes received by READ requests.");

    private static readonly Counter<long> BytesWritten = Meter.CreateCounter<long>(
        "drydock.nbd.bytes.written", unit: "By", description: "Payload bytes sent by WRITE requests.");

    private static readonly Counter<long> RequestErrors = Meter.CreateCounter<long>(
        "drydock.nbd.request.errors", description: "Requests the server answered with an error.");

    private static readonly Counter<long> ConnectionFailures = Meter.CreateCounter<long>(
        "drydock.nbd.connection.failures", description: "Connections that died: protocol violations, IO errors, timeouts.");

    internal static void RequestCompleted(NbdCommand command, uint length, TimeSpan elapsed, NbdErrorCode error)
    {
        var name = new KeyValuePair<string, object?>("nbd.command", NbdNames.Command(command));
        if (RequestDuration.Enabled)
        {
            RequestDuration.Record(elapsed.TotalSeconds, name);
        }

        if (error != NbdErrorCode.None)
        {
            RequestErrors.Add(1, name, new KeyValuePair<string, object?>("nbd.error", NbdNames.Error(error)));
            return;
        }

        switch (command)
        {
            case NbdCommand.Read:
                BytesRead.Add(length);
                break;
            case NbdCommand.Write:
                BytesWritten.Add(length);
                break;
        }
    }

    internal static void ConnectionFailed(Exception cause)
        => ConnectionFailures.Add(1, new KeyValuePair<string, object?>("error.type", cause.GetType().Name));
}
