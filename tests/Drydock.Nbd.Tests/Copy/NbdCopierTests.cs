using Drydock.Nbd.Copy;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Copy;

/// <summary>
/// <see cref="NbdCopier"/> against the in-tree server: ranges are queued as segments of several requests, and every
/// byte lands once, whatever the extents' sizes and boundaries.
/// </summary>
public sealed class NbdCopierTests
{
    private const int KiB = 1024;

    [Theory]
    [InlineData(1, 64)]
    [InlineData(3, 64)]
    [InlineData(4, 5)]
    public async Task Copy_of_data_runs_crossing_segment_boundaries_is_byte_identical_and_reads_only_data(int connections, int requests)
    {
        // 9 MiB + 12 KiB: a segment is 16 requests of 64 KiB here (1 MiB), so runs start and end inside segments and
        // the export ends inside one.
        const ulong size = (9UL * 1024 * KiB) + (12 * KiB);
        await using var server = TestServer.Start(size: size);
        var expected = new byte[size];
        var random = new Random(7);
        (ulong Offset, int Length)[] runs = [(0, 1536 * KiB), (2 * 1024 * KiB + 4 * KiB, 3 * 1024 * KiB), (6 * 1024 * KiB + 512 * KiB, 8 * KiB), (size - (1028 * KiB), 1028 * KiB)];
        foreach (var (offset, length) in runs)
        {
            var data = new byte[length];
            random.NextBytes(data);
            data.CopyTo(expected.AsSpan((int)offset));
            await server.Disk.Backend.WriteAsync(offset, data, fua: false, Ct);
        }

        var options = TestServer.Options(NbdContexts.BaseAllocation);
        options.Connections = connections;
        options.InlineCompletions = true;
        await using var client = await server.ConnectAsync(options: options);
        var path = server.TempPath("copy.raw");
        NbdCopyResult result;
        await using (var destination = new FileCopyDestination(path))
        {
            result = await new NbdCopier(client, new NbdCopyOptions { RequestSize = 64 * KiB, RequestsInFlight = requests }).CopyAsync(destination, Ct);
        }

        Assert.Equal(connections, client.Export.Connections);
        Assert.True(result.UsedAllocationMap);
        Assert.Equal(size, result.BytesRead + result.BytesSkipped);
        Assert.Equal((ulong)runs.Sum(r => r.Length), result.BytesRead); // holes are skipped, data read once
        Assert.Equal(expected, await File.ReadAllBytesAsync(path, Ct));
    }
}
