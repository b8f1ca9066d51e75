using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Client;

/// <summary>The client keeps to the server's block-size constraints (proto.md, "Block size constraints").</summary>
public sealed class NbdClientBlockSizeTests
{
    private const uint Maximum = 256 * 1024;

    // "for NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_CACHE and NBD_CMD_WRITE_ZEROES (except for when
    // NBD_CMD_FLAG_FAST_ZERO is set), the client MUST NOT use a length larger than any advertised maximum".
    [Fact]
    public async Task Write_zeroes_and_cache_never_exceed_the_maximum_block_size()
    {
        await using var server = TestServer.Start(listen: false);
        server.Server.AddExport(new NbdExport("strict", new NbdMemoryBackend(8 << 20), blockSizes: new NbdBlockSizes(512, 4096, Maximum)));
        await using var client = await server.ConnectAsync(TestTransport.InProcess, "strict");
        server.Faults.RecordRequests = true;

        await client.WriteAsync(0, new byte[8 << 20], cancellationToken: Ct);
        await client.WriteZeroesAsync(0, 4 << 20, cancellationToken: Ct);
        await client.WriteZeroesAsync(4 << 20, 4 << 20, NbdZeroOptions.NoHole, cancellationToken: Ct);
        await client.CacheAsync(0, 8 << 20, cancellationToken: Ct);

        var requests = server.Faults.Requests;
        Assert.Contains(requests, r => r.Command == NbdCommand.WriteZeroes);
        Assert.Contains(requests, r => r.Command == NbdCommand.Cache);
        Assert.All(requests, r => Assert.True(r.Length <= Maximum, $"{NbdNames.Command(r.Command)} of {r.Length} bytes"));
    }

    [Fact]
    public async Task Fast_write_zeroes_may_exceed_the_maximum_block_size()
    {
        await using var server = TestServer.Start(listen: false);
        server.Server.AddExport(new NbdExport("strict", new NbdMemoryBackend(8 << 20), blockSizes: new NbdBlockSizes(512, 4096, Maximum)));
        await using var client = await server.ConnectAsync(TestTransport.InProcess, "strict");
        server.Faults.RecordRequests = true;

        await client.WriteZeroesAsync(0, 8 << 20, NbdZeroOptions.Fast, cancellationToken: Ct);

        Assert.Equal([new NbdRequestHeader(NbdCommandFlags.FastZero, NbdCommand.WriteZeroes, server.Faults.Requests[0].Cookie, 0, 8 << 20)], server.Faults.Requests);
    }
}
