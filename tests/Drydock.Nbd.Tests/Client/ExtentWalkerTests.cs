using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Nbd.Tests.Client;

public sealed class ExtentWalkerTests
{
    private const string Allocation = NbdContexts.BaseAllocation;
    private const string Dirty = "qemu:dirty-bitmap:b";

    [Fact]
    public void Adjacent_extents_with_equal_flags_merge_within_and_across_replies()
    {
        var walker = new NbdExtentWalker([Allocation], 0, 4096);

        walker.Accept(0, Reply((Allocation, [E(0, 1024, 0), E(1024, 1024, 0)])));
        Assert.Equal(2048UL, walker.Next);
        walker.Accept(2048, Reply((Allocation, [E(2048, 512, 0), E(2560, 1536, 3)])));

        Assert.Null(walker.Next);
        Assert.Equal([E(0, 2560, 0), E(2560, 1536, 3)], walker.Result[Allocation]);
    }

    [Fact]
    public void Contexts_answering_different_lengths_each_keep_their_own_cursor()
    {
        var walker = new NbdExtentWalker([Allocation, Dirty], 0, 1000);

        walker.Accept(0, Reply((Allocation, [E(0, 600, 0)]), (Dirty, [E(0, 200, 1)])));
        Assert.Equal(200UL, walker.Next);

        // Allocation repeats what it already said about [200,400): ignored. Dirty now reaches the end.
        walker.Accept(200, Reply((Allocation, [E(200, 200, 0)]), (Dirty, [E(200, 800, 1)])));
        Assert.Equal(600UL, walker.Next);

        // Dirty's extent lies wholly behind its cursor; allocation runs past the end and is clipped.
        walker.Accept(600, Reply((Allocation, [E(600, 900, 2)]), (Dirty, [E(600, 100, 0)])));

        Assert.Null(walker.Next);
        Assert.Equal([E(0, 600, 0), E(600, 400, 2)], walker.Result[Allocation]);
        Assert.Equal([E(0, 1000, 1)], walker.Result[Dirty]);
    }

    [Fact]
    public void An_extent_straddling_a_cursor_contributes_only_the_part_after_it_and_merges()
    {
        var walker = new NbdExtentWalker([Allocation, Dirty], 0, 1000);
        walker.Accept(0, Reply((Allocation, [E(0, 500, 0)]), (Dirty, [E(0, 100, 0)])));

        walker.Accept(100, Reply((Allocation, [E(100, 700, 0)]), (Dirty, [E(100, 900, 1)])));

        Assert.Equal(800UL, walker.Next);
        Assert.Equal([E(0, 800, 0)], walker.Result[Allocation]);
        Assert.Equal([E(0, 100, 0), E(100, 900, 1)], walker.Result[Dirty]);
    }

    [Fact]
    public void Walk_over_a_range_not_starting_at_zero_is_clipped_to_the_requested_end()
    {
        var walker = new NbdExtentWalker([Allocation], 65536, 69632);
        Assert.Equal(65536UL, walker.Next);

        walker.Accept(65536, Reply((Allocation, [E(65536, 1 << 20, 1)])));

        Assert.Null(walker.Next);
        Assert.Equal([E(65536, 4096, 1)], walker.Result[Allocation]);
    }

    [Fact]
    public void Reply_missing_a_context_is_rejected()
    {
        var walker = new NbdExtentWalker([Allocation, Dirty], 0, 1000);

        var e = Assert.Throws<NbdProtocolException>(() => walker.Accept(0, Reply((Allocation, [E(0, 1000, 0)]))));
        Assert.Contains(Dirty, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Reply_leaving_a_gap_is_rejected()
    {
        var walker = new NbdExtentWalker([Allocation], 0, 1000);
        walker.Accept(0, Reply((Allocation, [E(0, 100, 0)])));

        var e = Assert.Throws<NbdProtocolException>(() => walker.Accept(100, Reply((Allocation, [E(200, 100, 0)]))));
        Assert.Contains("gap at offset 100", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Gap_inside_one_reply_is_rejected()
    {
        var walker = new NbdExtentWalker([Allocation], 0, 1000);

        Assert.Throws<NbdProtocolException>(() => walker.Accept(0, Reply((Allocation, [E(0, 100, 0), E(150, 100, 1)]))));
    }

    [Fact]
    public void Reply_that_moves_no_cursor_forward_is_rejected()
    {
        var walker = new NbdExtentWalker([Allocation], 0, 1000);
        walker.Accept(0, Reply((Allocation, [E(0, 100, 0)])));

        var e = Assert.Throws<NbdProtocolException>(() => walker.Accept(100, Reply((Allocation, [E(0, 100, 0)]))));
        Assert.Contains("no forward progress", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Progress_of_a_context_ahead_does_not_count_when_the_lowest_cursor_is_stuck()
    {
        var walker = new NbdExtentWalker([Allocation, Dirty], 0, 1000);
        walker.Accept(0, Reply((Allocation, [E(0, 100, 0)]), (Dirty, [E(0, 300, 0)])));

        // Allocation (the lowest cursor, 100) says nothing new; dirty advances from 300 to 500.
        Assert.Throws<NbdProtocolException>(() => walker.Accept(100, Reply((Allocation, [E(0, 100, 0)]), (Dirty, [E(100, 400, 0)]))));
    }

    private static NbdExtent E(ulong offset, ulong length, uint flags) => new(offset, length, flags);

    private static Dictionary<string, List<NbdExtent>> Reply(params (string Context, NbdExtent[] Extents)[] contexts)
        => contexts.ToDictionary(c => c.Context, c => c.Extents.ToList(), StringComparer.Ordinal);
}
