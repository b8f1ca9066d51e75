using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Nbd.Tests.Protocol;

public sealed class ReadCoverageTests
{
    private const NbdReplyChunkType Data = NbdReplyChunkType.OffsetData;
    private const NbdReplyChunkType Hole = NbdReplyChunkType.OffsetHole;

    [Fact]
    public void Chunks_in_order_complete_the_read_exactly_at_the_last_byte()
    {
        var coverage = new NbdReadCoverage(4096, 1024);

        coverage.Add(4096, 512, Data);
        Assert.False(coverage.IsComplete);
        coverage.Add(4608, 511, Hole);
        Assert.False(coverage.IsComplete);
        Assert.Equal(5119UL, coverage.FirstMissing());
        coverage.Add(5119, 1, Data);

        Assert.True(coverage.IsComplete);
        Assert.Equal(1024UL, coverage.Covered);
        Assert.Equal(5120UL, coverage.FirstMissing());
    }

    [Fact]
    public void Chunks_out_of_order_complete_the_read_and_merge_from_both_sides()
    {
        var coverage = new NbdReadCoverage(0, 1000);

        coverage.Add(600, 400, Data);
        coverage.Add(0, 100, Hole);
        coverage.Add(300, 100, Data);
        Assert.Equal(100UL, coverage.FirstMissing());
        coverage.Add(100, 200, Data); // joins [0,100) and [300,400)
        Assert.Equal(400UL, coverage.FirstMissing());
        Assert.False(coverage.IsComplete);
        coverage.Add(400, 200, Hole); // joins [0,400) and [600,1000)

        Assert.True(coverage.IsComplete);
        Assert.Equal(1000UL, coverage.FirstMissing());
    }

    [Fact]
    public void A_single_chunk_may_cover_the_whole_request()
    {
        var coverage = new NbdReadCoverage(ulong.MaxValue - 4096, 4096);

        coverage.Add(ulong.MaxValue - 4096, 4096, Data);

        Assert.True(coverage.IsComplete);
    }

    [Theory]
    [InlineData(999UL, 2UL)] // starts before the request
    [InlineData(1000UL, 1001UL)] // ends one byte after the request
    [InlineData(2000UL, 1UL)] // starts at the request end
    [InlineData(5000UL, 10UL)] // entirely after
    [InlineData(1500UL, ulong.MaxValue)] // offset + length overflows
    [InlineData(ulong.MaxValue, 2UL)]
    public void Chunks_outside_the_request_are_rejected(ulong offset, ulong length)
    {
        var coverage = new NbdReadCoverage(1000, 1000);

        var e = Assert.Throws<NbdProtocolException>(() => coverage.Add(offset, length, Data));
        Assert.Contains("outside the request", e.Message, StringComparison.Ordinal);
        Assert.Equal(0UL, coverage.Covered);
    }

    [Fact]
    public void Zero_length_chunk_is_rejected()
    {
        var coverage = new NbdReadCoverage(0, 10);

        var e = Assert.Throws<NbdProtocolException>(() => coverage.Add(5, 0, Hole));
        Assert.Contains("zero bytes", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(100UL, 100UL)] // the same range twice
    [InlineData(150UL, 10UL)] // inside
    [InlineData(50UL, 51UL)] // overlaps the first byte
    [InlineData(199UL, 50UL)] // overlaps the last byte
    [InlineData(0UL, 1000UL)] // covers it and more
    public void Chunks_overlapping_earlier_ones_are_rejected(ulong offset, ulong length)
    {
        var coverage = new NbdReadCoverage(0, 1000);
        coverage.Add(100, 100, Data);

        var e = Assert.Throws<NbdProtocolException>(() => coverage.Add(offset, length, Hole));
        Assert.Contains("overlaps", e.Message, StringComparison.Ordinal);
        Assert.Equal(100UL, coverage.Covered);
    }

    [Fact]
    public void Duplicating_bytes_while_others_are_missing_is_caught_although_the_byte_count_matches()
    {
        // 300 bytes requested; the server sends [0,100) twice and [200,300): 300 bytes, but [100,200) is missing.
        var coverage = new NbdReadCoverage(0, 300);
        coverage.Add(200, 100, Data);
        coverage.Add(0, 100, Data);

        Assert.Throws<NbdProtocolException>(() => coverage.Add(0, 100, Data));
        Assert.False(coverage.IsComplete);
        Assert.Equal(100UL, coverage.FirstMissing());
    }

    [Fact]
    public void Overlap_is_found_among_many_fragments_not_only_the_neighbours()
    {
        var coverage = new NbdReadCoverage(0, 10_000);
        for (ulong at = 0; at < 10_000; at += 100)
        {
            coverage.Add(at, 10, Data);
        }

        Assert.Throws<NbdProtocolException>(() => coverage.Add(4995, 10, Data)); // hits [5000,5010)
        Assert.Throws<NbdProtocolException>(() => coverage.Add(5009, 2, Data)); // hits the last byte of [5000,5010)
        coverage.Add(5010, 90, Data); // fills exactly the gap up to [5100,5110)
        Assert.Throws<NbdProtocolException>(() => coverage.Add(5050, 60, Data));
        Assert.Equal(10UL, coverage.FirstMissing());
    }

    [Fact]
    public void First_missing_is_the_request_start_when_the_first_chunk_is_later()
    {
        var coverage = new NbdReadCoverage(512, 2048);
        Assert.Equal(512UL, coverage.FirstMissing());

        coverage.Add(1024, 512, Data);
        Assert.Equal(512UL, coverage.FirstMissing());

        coverage.Add(512, 512, Data);
        Assert.Equal(1536UL, coverage.FirstMissing());
    }

    [Fact]
    public void Error_offsets_must_lie_inside_the_request()
    {
        var coverage = new NbdReadCoverage(1000, 100);

        coverage.CheckErrorOffset(1000);
        coverage.CheckErrorOffset(1099);
        Assert.Throws<NbdProtocolException>(() => coverage.CheckErrorOffset(999));
        Assert.Throws<NbdProtocolException>(() => coverage.CheckErrorOffset(1100));
    }

    [Fact]
    public void More_disjoint_pieces_than_the_cap_are_rejected_but_joining_pieces_still_fit()
    {
        const ulong cap = NbdReadCoverage.MaxFragments;
        var coverage = new NbdReadCoverage(0, (cap * 2) + 16);
        for (ulong i = 0; i < cap; i++)
        {
            coverage.Add(i * 2, 1, Data); // [0,1) [2,3) [4,5) ...: every piece disjoint
        }

        var e = Assert.Throws<NbdProtocolException>(() => coverage.Add(cap * 2, 1, Data));
        Assert.Contains($"{cap}", e.Message, StringComparison.Ordinal);

        // Pieces that touch an existing fragment add none: extending the last one, and bridging two in the middle.
        coverage.Add((cap * 2) - 1, 1, Hole);
        coverage.Add(1, 1, Hole);
        Assert.Equal(3UL, coverage.FirstMissing());

        // Bridging freed one slot: one new disjoint piece fits again, a second one does not.
        coverage.Add((cap * 2) + 1, 1, Data);
        Assert.Throws<NbdProtocolException>(() => coverage.Add((cap * 2) + 5, 1, Data));
        Assert.Equal(cap + 3, coverage.Covered);
    }
}

public sealed class BlockStatusValidatorTests
{
    private const ulong ExportSize = 1 << 20;

    private static readonly Dictionary<uint, string> Contexts = new()
    {
        [1] = NbdContexts.BaseAllocation,
        [7] = NbdContexts.DirtyBitmap("backup-1"),
    };

    [Fact]
    public void Descriptors_become_extents_with_absolute_offsets_from_the_request_offset()
    {
        var validator = new NbdBlockStatusValidator(65536, 65536, requestOne: false, ExportSize, Contexts);
        var extents = new List<NbdExtent>();

        var name = validator.Accept(1, Descriptors((4096, 3), (61440, 0)), extents);

        Assert.Equal(NbdContexts.BaseAllocation, name);
        Assert.Equal([new NbdExtent(65536, 4096, 3), new NbdExtent(69632, 61440, 0)], extents);
    }

    [Fact]
    public void Multi_context_reply_is_complete_only_after_every_context_answered_with_its_own_length()
    {
        var validator = new NbdBlockStatusValidator(0, 8192, requestOne: false, ExportSize, Contexts);
        var allocation = new List<NbdExtent>();
        var dirty = new List<NbdExtent>();

        Assert.Equal(NbdContexts.DirtyBitmap("backup-1"), validator.Accept(7, Descriptors((512, 1), (1024, 0), (2048, 1)), dirty));
        Assert.False(validator.IsComplete);
        Assert.Equal(NbdContexts.BaseAllocation, validator.Accept(1, Descriptors((16384, 0)), allocation));

        Assert.True(validator.IsComplete);
        Assert.Equal([new NbdExtent(0, 512, 1), new NbdExtent(512, 1024, 0), new NbdExtent(1536, 2048, 1)], dirty);
        Assert.Equal([new NbdExtent(0, 16384, 0)], allocation);
    }

    [Fact]
    public void Unknown_context_id_is_rejected()
    {
        var validator = new NbdBlockStatusValidator(0, 4096, requestOne: false, ExportSize, Contexts);

        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(2, Descriptors((4096, 0)), []));
        Assert.Contains("context id 2", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Context_answered_twice_in_one_reply_is_rejected()
    {
        var validator = new NbdBlockStatusValidator(0, 4096, requestOne: false, ExportSize, Contexts);
        validator.Accept(1, Descriptors((4096, 0)), []);

        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(1, Descriptors((4096, 0)), []));
        Assert.Contains("twice", e.Message, StringComparison.Ordinal);
        Assert.False(validator.IsComplete);
    }

    [Fact]
    public void Req_one_with_two_descriptors_is_rejected()
    {
        var validator = new NbdBlockStatusValidator(0, 8192, requestOne: true, ExportSize, Contexts);

        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(1, Descriptors((4096, 0), (4096, 1)), []));
        Assert.Contains("REQ_ONE", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Req_one_extent_longer_than_the_request_is_rejected_but_a_shorter_one_is_accepted()
    {
        var validator = new NbdBlockStatusValidator(4096, 8192, requestOne: true, ExportSize, Contexts);
        var extents = new List<NbdExtent>();

        validator.Accept(1, Descriptors((4096, 2)), extents);
        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(7, Descriptors((8193, 0)), []));

        Assert.Contains("REQ_ONE", e.Message, StringComparison.Ordinal);
        Assert.Equal([new NbdExtent(4096, 4096, 2)], extents);
    }

    [Fact]
    public void Zero_length_extent_is_rejected()
    {
        var validator = new NbdBlockStatusValidator(0, 8192, requestOne: false, ExportSize, Contexts);

        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(1, Descriptors((4096, 0), (0, 1), (4096, 0)), []));
        Assert.Contains("length zero", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Only_the_final_extent_may_reach_past_the_request()
    {
        var validator = new NbdBlockStatusValidator(0, 8192, requestOne: false, ExportSize, Contexts);
        var extents = new List<NbdExtent>();

        validator.Accept(1, Descriptors((4096, 0), (65536, 1)), extents); // final extent runs past: allowed
        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(7, Descriptors((8192, 0), (4096, 1)), []));

        Assert.Contains("past the requested range", e.Message, StringComparison.Ordinal);
        Assert.Equal([new NbdExtent(0, 4096, 0), new NbdExtent(4096, 65536, 1)], extents);
    }

    [Fact]
    public void Extent_past_the_export_end_is_rejected_and_one_ending_at_it_is_accepted()
    {
        var validator = new NbdBlockStatusValidator(ExportSize - 8192, 8192, requestOne: false, ExportSize, Contexts);

        validator.Accept(1, Descriptors((8192, 0)), []);
        var e = Assert.Throws<NbdProtocolException>(() => validator.Accept(7, Descriptors((4096, 0), (4097, 0)), []));
        Assert.Contains("export end", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Huge_final_extent_near_the_top_of_the_offset_space_is_rejected_not_wrapped()
    {
        // An export as large as the offset space allows: the extent's end must not wrap around to a small value.
        var validator = new NbdBlockStatusValidator(ulong.MaxValue - 4096, 4096, requestOne: false, ulong.MaxValue, Contexts);

        Assert.Throws<NbdProtocolException>(() => validator.Accept(1, Descriptors((0xffff_ffff, 0)), []));
    }

    [Fact]
    public void Request_whose_end_overflows_is_refused_when_the_validator_is_made()
    {
        Assert.Throws<OverflowException>(() => new NbdBlockStatusValidator(ulong.MaxValue - 10, 11, requestOne: false, ulong.MaxValue, Contexts));
    }

    private static byte[] Descriptors(params (uint Length, uint Flags)[] descriptors)
    {
        var payload = NbdTransmissionCodec.BuildBlockStatus(0, [.. descriptors.Select(d => new NbdBlockDescriptor(d.Length, d.Flags))]);
        NbdTransmissionCodec.ParseBlockStatus(payload, out var bytes);
        return bytes.ToArray();
    }
}
