using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>BLOCK_STATUS descriptor lengths are multiples of the minimum block size, whatever the backend's granularity.</summary>
public sealed class NbdServerAllocationAlignmentTests
{
    private const uint Unit = 4096;
    private const uint Hole = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);

    [Fact]
    public async Task Allocation_of_an_export_with_64_KiB_blocks_comes_in_64_KiB_blocks()
    {
        await using var server = TestServer.Start(listen: false);
        var export = server.Server.AddExport(new NbdExport("big-blocks", new NbdMemoryBackend(1 << 20), blockSizes: new NbdBlockSizes(65536, 65536, 1 << 20)));
        await export.WriteAsync(69632, new byte[4096], cancellationToken: Ct);   // one 4 KiB page inside the second block
        await using var client = await server.ConnectAsync(TestTransport.InProcess, "big-blocks", TestServer.Options(NbdContexts.BaseAllocation));

        var map = (await client.MapAsync(cancellationToken: Ct))[NbdContexts.BaseAllocation];
        var first = (await client.GetBlockStatusAsync(0, 1 << 20, requestOne: true, Ct))[NbdContexts.BaseAllocation];
        var second = (await client.GetBlockStatusAsync(65536, 65536, requestOne: true, Ct))[NbdContexts.BaseAllocation];

        Assert.Equal([new NbdExtent(0, 65536, Hole), new NbdExtent(65536, 65536, 0), new NbdExtent(131072, (1 << 20) - 131072, Hole)], map);
        Assert.Equal([new NbdExtent(0, 65536, Hole)], first);
        Assert.Equal([new NbdExtent(65536, 65536, 0)], second);
    }

    // Model: each block's flags are the AND of the flags of every extent that touches it.
    [Fact]
    public void Aligned_extents_cover_the_same_range_in_whole_blocks_with_the_flags_all_parts_share()
    {
        var extents = Gen.ListOf(Gen.Zip(Gen.Choose(1, 3 * (int)Unit), Gen.Elements(0u, 1u, 2u, 3u)))
            .Where(list => list.Count > 0)
            .Select(list =>
            {
                var result = new List<NbdExtent>();
                var at = 7UL * Unit;
                foreach (var (length, flags) in list)
                {
                    result.Add(new NbdExtent(at, (ulong)length, flags));
                    at += (ulong)length;
                }

                // Make the whole range end on a block boundary, as a request does.
                var tail = (Unit - (at % Unit)) % Unit;
                if (tail > 0)
                {
                    result.Add(new NbdExtent(at, tail, 3));
                }

                return result;
            });
        var property = Prop.ForAll(Arb.From(extents), input =>
        {
            var aligned = NbdServerConnection.AlignExtents(input, Unit);
            var start = input[0].Offset;
            var end = input[^1].End;
            if (aligned[0].Offset != start || aligned[^1].End != end)
            {
                return false;
            }

            for (var i = 0; i < aligned.Count; i++)
            {
                if (aligned[i].Length == 0 || aligned[i].Length % Unit != 0 || (i > 0 && aligned[i].Offset != aligned[i - 1].End))
                {
                    return false;
                }
            }

            for (var block = start; block < end; block += Unit)
            {
                var expected = input.Where(e => e.Offset < block + Unit && e.End > block).Aggregate(uint.MaxValue, (flags, e) => flags & e.Flags);
                if (aligned.Single(e => e.Offset <= block && e.End > block).Flags != expected)
                {
                    return false;
                }
            }

            return true;
        });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }
}
