using Drydock.Nbd;
using Drydock.Transfer.Backup;
using FsCheck;
using FsCheck.Fluent;
using Xunit;

namespace Drydock.Transfer.Tests.Backup;

public sealed class ReadPlannerTests
{
    private const int Chunk = 1000;
    private const uint Data = 0;
    private const uint HoleZero = 3;
    private const uint Zero = 2;
    private const uint HoleOnly = 1;

    private static NbdExtent E(long offset, long length, uint flags) => new((ulong)offset, (ulong)length, flags);

    [Fact]
    public void Full_reads_chunks_with_data_and_marks_zero_chunks_without_inheriting_any()
    {
        // 0-999 data, 1000-2999 zero, 3000-3499 data + 3500-4499 zero, last chunk 4000-4499 zero.
        var allocation = new[] { E(0, 1000, Data), E(1000, 2000, HoleZero), E(3000, 500, Data), E(3500, 1000, Zero) };

        var plan = ReadPlanner.Plan(4500, Chunk, allocation, dirty: null, refresh: []);

        Assert.Equal(5, plan.ChunkCount);
        Assert.Equal([0L, 3L], plan.Reads.Select(r => r.Index));
        Assert.Equal([1L, 2L, 4L], plan.ZeroChunks);
        Assert.Equal(0, plan.InheritedChunks);
        Assert.Equal(2, plan.Runs);
        Assert.Null(plan.Reads[0].Pieces);
        var partial = Assert.Single(plan.Reads[1].Pieces!);
        Assert.Equal(new ReadPiece(3000, 500), partial);
        Assert.Equal(1500, plan.BytesToRead);
    }

    [Fact]
    public void A_hole_without_the_zero_flag_is_read_because_it_may_hold_backing_data()
    {
        var plan = ReadPlanner.Plan(2000, Chunk, [E(0, 1000, HoleOnly), E(1000, 1000, HoleZero)], null, []);

        Assert.Equal([0L], plan.Reads.Select(r => r.Index));
        Assert.Equal([1L], plan.ZeroChunks);
    }

    [Fact]
    public void Incremental_touches_only_dirty_chunks_and_stores_trimmed_dirty_chunks_as_zero()
    {
        // F19: chunk 2 was trimmed since the last backup (dirty, now zero): it must be recorded as zero, not inherited.
        var allocation = new[] { E(0, 2000, Data), E(2000, 1000, HoleZero), E(3000, 3000, Data) };
        var dirty = new[] { E(0, 1500, 0), E(1500, 1600, 1), E(3100, 1900, 0), E(5000, 1000, 1) };

        var plan = ReadPlanner.Plan(6000, Chunk, allocation, dirty, []);

        Assert.Equal([1L, 3L, 5L], plan.Reads.Select(r => r.Index));
        Assert.Equal([2L], plan.ZeroChunks);
        Assert.Equal(2, plan.InheritedChunks); // chunks 0 and 4
        Assert.Equal(3, plan.Runs);            // 1 | 3 | 5
    }

    [Fact]
    public void Refresh_required_chunks_are_read_even_when_clean()
    {
        var allocation = new[] { E(0, 4000, Data) };
        var dirty = new[] { E(0, 4000, 0) };

        var plan = ReadPlanner.Plan(4000, Chunk, allocation, dirty, refresh: [1, 2]);

        Assert.Equal([1L, 2L], plan.Reads.Select(r => r.Index));
        Assert.Equal(1, plan.Runs);
        Assert.Empty(plan.ZeroChunks);
    }

    [Fact]
    public void A_partly_changed_chunk_with_a_parent_copy_is_patched_reading_only_its_changed_data()
    {
        // Chunk 0: 100 bytes dirty (patched). Chunk 1: dirty 1000-1300, of which 1200-1300 now reads zero (patched: zero
        // 1000-1300, read 1000-1200). Chunk 2: dirty 2000-2700 (70 %, over the 0.5 limit: read whole). Chunk 3: wholly
        // dirty (read whole). Chunk 4: partly dirty but refreshed (its parent copy is bad: read whole). Chunk 5: partly
        // dirty, no parent copy (read whole).
        var allocation = new[] { E(0, 1200, Data), E(1200, 100, HoleZero), E(1300, 4700, Data) };
        var dirty = new[] { E(0, 100, 1), E(100, 900, 0), E(1000, 300, 1), E(1300, 700, 0), E(2000, 700, 1), E(2700, 300, 0), E(3000, 1100, 1), E(4100, 1000, 0), E(5100, 10, 1), E(5110, 890, 0) };

        var plan = ReadPlanner.Plan(6000, Chunk, allocation, dirty, refresh: [4], patchable: i => i != 5, patchBelow: 0.5);

        Assert.Equal([0L, 1L, 2L, 3L, 4L, 5L], plan.Reads.Select(r => r.Index));
        Assert.Equal(2, plan.PatchedChunks);
        var first = plan.Reads[0].Patch!;
        Assert.Equal([new ReadPiece(0, 100)], first.Changed);
        Assert.Equal([new ReadPiece(0, 100)], first.Reads);
        var second = plan.Reads[1].Patch!;
        Assert.Equal([new ReadPiece(1000, 300)], second.Changed);
        Assert.Equal([new ReadPiece(1000, 200)], second.Reads);
        Assert.Equal([new ReadPiece(1000, 200), new ReadPiece(1300, 700)], plan.Reads[1].Pieces);
        Assert.All(plan.Reads.Skip(2), r => Assert.Null(r.Patch));
        Assert.Equal(100 + 200 + 1000 + 1000 + 1000 + 1000, plan.BytesToRead);
    }

    [Fact]
    public void Without_a_patch_limit_or_a_parent_copy_partly_changed_chunks_are_read_whole()
    {
        var allocation = new[] { E(0, 2000, Data) };
        var dirty = new[] { E(0, 100, 1), E(100, 1900, 0) };

        Assert.Equal(0, ReadPlanner.Plan(2000, Chunk, allocation, dirty, [], patchable: _ => true, patchBelow: 0).PatchedChunks);
        Assert.Equal(0, ReadPlanner.Plan(2000, Chunk, allocation, dirty, [], patchable: _ => false, patchBelow: 1).PatchedChunks);
        Assert.Equal(0, ReadPlanner.Plan(2000, Chunk, allocation, null, [], patchable: _ => true, patchBelow: 1).PatchedChunks);
        Assert.Equal(1000, ReadPlanner.Plan(2000, Chunk, allocation, dirty, [], patchable: _ => false, patchBelow: 1).BytesToRead);
    }

    [Fact]
    public void Gaps_in_the_allocation_map_are_read_never_assumed_zero()
    {
        var plan = ReadPlanner.Plan(3000, Chunk, [E(0, 1000, HoleZero)], null, []);

        Assert.Equal([1L, 2L], plan.Reads.Select(r => r.Index));
        Assert.Equal([0L], plan.ZeroChunks);
    }

    [Fact]
    public void Plans_partition_the_chunks_and_read_every_dirty_allocated_byte()
    {
        var gen =
            from chunk in Gen.Choose(1, 64)
            from chunks in Gen.Choose(0, 40)
            from tail in Gen.Choose(0, chunk - 1)
            from allocLengths in Gen.ListOf(Gen.Choose(1, 200))
            from allocFlags in Gen.ListOf(Gen.Elements(Data, HoleOnly, Zero, HoleZero))
            from dirtyLengths in Gen.ListOf(Gen.Choose(1, 300))
            from full in Gen.Elements(true, false)
            from refresh in Gen.ListOf(Gen.Choose(0, 50))
            from patchBelow in Gen.Elements(0.0, 0.25, 0.5, 1.0)
            from noParent in Gen.Choose(2, 7)
            select (chunk, size: ((long)chunks * chunk) + (chunks > 0 ? tail : 0), allocLengths, allocFlags, dirtyLengths, full, refresh, patchBelow, noParent);

        var property = Prop.ForAll(Arb.From(gen), c =>
        {
            var allocation = Cover(c.size, c.allocLengths, i => c.allocFlags.Count == 0 ? Data : c.allocFlags[i % c.allocFlags.Count]);
            var dirty = c.full ? null : Cover(c.size, c.dirtyLengths, i => (uint)(i % 2));
            var count = (c.size + c.chunk - 1) / c.chunk;
            var refresh = c.full ? [] : c.refresh.Where(r => r < count).Select(r => (long)r).Distinct().ToList();

            var plan = ReadPlanner.Plan(c.size, c.chunk, allocation, dirty, refresh, i => i % c.noParent != 0, c.patchBelow);

            var read = plan.Reads.Select(r => r.Index).ToHashSet();
            var zero = plan.ZeroChunks.ToHashSet();
            var disjoint = !read.Overlaps(zero) && read.Count == plan.Reads.Count && zero.Count == plan.ZeroChunks.Count;
            var inRange = read.Concat(zero).All(i => i >= 0 && i < count);
            var fullCovers = dirty is not null || read.Count + zero.Count == count;

            // Every byte that is dirty (or in a refreshed chunk) and not known to be zero lies in a chunk that is read.
            var bytesCovered = true;
            for (long b = 0; b < c.size && bytesCovered; b++)
            {
                var touched = dirty is null || Flag(dirty, b) == 1 || refresh.Contains(b / c.chunk);
                if (touched && (Flag(allocation, b) & Zero) == 0)
                {
                    bytesCovered = read.Contains(b / c.chunk);
                }

                // A chunk marked zero must read as zero everywhere.
                if (zero.Contains(b / c.chunk) && (Flag(allocation, b) & Zero) == 0)
                {
                    bytesCovered = false;
                }
            }

            // A patched chunk: only with a parent copy, never when refreshed or in a full; its changed ranges are exactly the
            // dirty bytes of the chunk, and it reads exactly their data bytes, which are fewer than a whole read.
            var patchesSound = plan.Reads.Where(r => r.Patch is not null).All(r =>
            {
                if (dirty is null || refresh.Contains(r.Index) || r.Index % c.noParent == 0 || r.BytesToRead > c.patchBelow * r.Length || r.BytesToRead >= r.WholeBytesToRead)
                {
                    return false;
                }

                for (var b = r.Offset; b < r.Offset + r.Length; b++)
                {
                    var changed = r.Patch!.Changed.Any(p => b >= p.Offset && b < p.Offset + p.Length);
                    var readHere = r.Patch.Reads.Any(p => b >= p.Offset && b < p.Offset + p.Length);
                    if (changed != (Flag(dirty, b) == 1) || readHere != (changed && (Flag(allocation, b) & Zero) == 0))
                    {
                        return false;
                    }
                }

                return true;
            });
            var ordered = plan.Reads.Zip(plan.Reads.Skip(1)).All(p => p.First.Index < p.Second.Index);
            var bytes = plan.BytesToRead == plan.Reads.Sum(r => r.BytesToRead) && plan.PatchedChunks == plan.Reads.Count(r => r.Patch is not null);
            return disjoint && inRange && fullCovers && bytesCovered && patchesSound && bytes && ordered && plan.InheritedChunks == count - read.Count - zero.Count;
        });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }

    private static List<NbdExtent> Cover(long size, IReadOnlyList<int> lengths, Func<int, uint> flags)
    {
        var extents = new List<NbdExtent>();
        long at = 0;
        for (var i = 0; at < size; i++)
        {
            var length = lengths.Count == 0 ? size : Math.Min(lengths[i % lengths.Count], size - at);
            extents.Add(E(at, length, flags(i)));
            at += length;
        }

        return extents;
    }

    private static uint Flag(IReadOnlyList<NbdExtent> extents, long at) =>
        extents.First(e => (long)e.Offset <= at && at < (long)e.End).Flags;
}
