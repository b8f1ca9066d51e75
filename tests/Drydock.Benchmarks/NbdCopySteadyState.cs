using System.Diagnostics;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Copy;
using Drydock.Nbd.Protocol;

namespace Drydock.Benchmarks;

/// <summary>
/// The copy's steady state, without process start-up: the same whole-export copy to <c>null:</c> repeated
/// in one process (as a long-running silo would run it), after one warm-up copy.
/// </summary>
internal static class NbdCopySteadyState
{
    public static async Task<double> MedianSecondsAsync(string uri, int runs, CancellationToken cancellationToken)
    {
        var samples = new List<double>();
        for (var run = 0; run <= runs; run++)
        {
            var options = new NbdClientOptions { Connections = 4, MaxRequestsInFlight = 16, InlineCompletions = true };
            options.MetaContexts.Add(NbdContexts.BaseAllocation);
            var started = Stopwatch.GetTimestamp();
            await using (var client = await NbdClient.ConnectAsync(NbdUri.Parse(uri), options, cancellationToken))
            {
                await new NbdCopier(client).CopyAsync(new NullCopyDestination(), cancellationToken);
                await client.DisconnectAsync(cancellationToken);
            }

            if (run > 0)
            {
                samples.Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
        }

        samples.Sort();
        return samples[samples.Count / 2];
    }
}
