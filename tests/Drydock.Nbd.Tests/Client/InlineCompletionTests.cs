using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Client;

/// <summary>
/// <see cref="Nbd.Client.NbdClientOptions.InlineCompletions"/>: continuations run on the connection's
/// reader thread (no hand-off), and a continuation that sends a payload is moved off that thread, so a
/// full socket can never leave the reader waiting on itself.
/// </summary>
public sealed class InlineCompletionTests
{
    [Fact]
    public async Task With_inline_completions_the_continuation_of_a_read_runs_on_the_reader_thread()
    {
        await using var server = TestServer.Start();
        // The reply must arrive after the await has suspended: a reply already there completes the await on the
        // caller's own thread, whatever the option says.
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromMilliseconds(50), NbdCommand.Read));
        var options = TestServer.Options();
        options.InlineCompletions = true;
        await using var client = await server.ConnectAsync(options: options);

        await client.ReadAsync(0, new byte[4096], Ct);
        var inline = Thread.CurrentThread.Name;

        options = TestServer.Options();
        await using var pooled = await server.ConnectAsync(options: options);
        await pooled.ReadAsync(0, new byte[4096], Ct);
        var hopped = Thread.CurrentThread.Name;

        Assert.StartsWith("nbd-reader-", inline, StringComparison.Ordinal);
        Assert.False(hopped?.StartsWith("nbd-reader-", StringComparison.Ordinal) ?? false, hopped);
    }

    [Fact]
    public async Task With_inline_completions_a_request_issued_from_a_continuation_stays_on_that_connection()
    {
        await using var server = TestServer.Start();
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromMilliseconds(5), NbdCommand.Read));
        var options = TestServer.Options();
        options.Connections = 3;
        options.InlineCompletions = true;
        await using var client = await server.ConnectAsync(options: options);
        Assert.Equal(3, client.Export.Connections);

        // Six chains of five reads: after the first, each read is sent from the reader thread that completed the
        // previous one, and its reply comes back on that same thread (round-robin would move it to another).
        var chains = Enumerable.Range(0, 6).Select(async chain =>
        {
            var threads = new List<string?>();
            var buffer = new byte[4096];
            for (var step = 0; step < 5; step++)
            {
                await client.ReadAsync((ulong)(((chain * 5) + step) * 4096), buffer, Ct);
                threads.Add(Thread.CurrentThread.Name);
            }

            return threads;
        });

        foreach (var threads in await Task.WhenAll(chains))
        {
            Assert.StartsWith("nbd-reader-", threads[0], StringComparison.Ordinal);
            Assert.All(threads, name => Assert.Equal(threads[0], name));
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Large_writes_issued_from_inline_continuations_complete_and_land()
    {
        const int piece = 1024 * 1024; // several times a Unix socket's buffer
        await using var server = TestServer.Start();
        var options = TestServer.Options();
        options.InlineCompletions = true;
        options.MaxRequestsInFlight = 4;
        await using var client = await server.ConnectAsync(options: options);

        // Eight chains of read → 1 MiB write → read → …, each step continuing on the reader thread.
        var chains = Enumerable.Range(0, 8).Select(async chain =>
        {
            var scratch = new byte[4096];
            for (var step = 0; step < 2; step++)
            {
                var offset = (ulong)(((chain * 2) + step) * piece);
                await client.ReadAsync(offset, scratch, Ct);
                await client.WriteAsync(offset, Pattern(offset, piece), cancellationToken: Ct);
            }
        });
        await Task.WhenAll(chains);

        var back = new byte[piece];
        for (ulong offset = 0; offset < 16 * piece; offset += piece)
        {
            await client.ReadAsync(offset, back, Ct);
            Assert.Equal(Pattern(offset, piece), back);
        }
    }

    private static byte[] Pattern(ulong offset, int length)
    {
        var data = new byte[length];
        for (var i = 0; i < length; i++)
        {
            data[i] = (byte)((offset >> 20) + (ulong)(i % 251));
        }

        return data;
    }
}
