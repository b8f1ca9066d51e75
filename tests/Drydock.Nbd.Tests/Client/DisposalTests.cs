using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Client;

/// <summary>Disposing a client under requests that are in flight, waiting for a slot or stuck sending.</summary>
public sealed class DisposalTests
{
    [Fact(Timeout = 120_000)]
    public async Task Requests_in_flight_waiting_or_sending_when_the_client_is_disposed_fail_as_a_closed_connection()
    {
        const int piece = 4 * 1024 * 1024; // larger than a Unix socket's buffer: the send blocks while the server sleeps
        await using var server = TestServer.Start(size: 8 * piece);
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromSeconds(30)));
        var options = TestServer.Options();
        options.MaxRequestsInFlight = 2;
        var client = await server.ConnectAsync(options: options);

        var requests = Enumerable.Range(0, 8)
            .Select(i => Task.Run(
                () => i % 2 == 0
                    ? client.ReadAsync((ulong)i * 4096, new byte[4096], Ct)
                    : client.WriteAsync((ulong)i * piece, new byte[piece], cancellationToken: Ct),
                Ct))
            .ToList();
        await Task.Delay(TimeSpan.FromMilliseconds(300), Ct);
        await client.DisposeAsync();

        foreach (var request in requests)
        {
            var error = await Assert.ThrowsAnyAsync<Exception>(() => request);
            Assert.True(error is NbdConnectionException, error.ToString());
        }
    }
}
