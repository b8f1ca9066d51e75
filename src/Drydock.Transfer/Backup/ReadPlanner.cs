using Drydock.Nbd;

namespace Drydock.Transfer.Backup;

/// <summary>A byte range inside a chunk that holds data (is not reported as reading zeroes).</summary>
/// <param name="Offset">Absolute offset in the disk.</param>
/// <param name="Length">Length in bytes.</param>
internal readonly record struct ReadPiece(long Offset, int Length);

/// <summary>How to rebuild a partly changed chunk from the parent point's copy: start from the parent's bytes, zero the
/// changed ranges, then read the data pieces inside them.</summary>
/// <param name="Changed">The ranges changed since the parent (dirty), merged, in order.</param>
/// <param name="Reads">The data ranges inside <paramref name="Changed"/> (the rest of a changed range reads as zeros).</param>
internal sealed record ChunkPatch(IReadOnlyList<ReadPiece> Changed, IReadOnlyList<ReadPiece> Reads)
{
    /// <summary>Bytes that cross the wire when the chunk is patched.</summary>
    public long BytesToRead => Reads.Sum(p => (long)p.Length);
}

/// <summary>One chunk to read and submit.</summary>
/// <param name="Index">The chunk index.</param>
/// <param name="Offset">The chunk's offset in the disk.</param>
/// <param name="Length">The chunk's length.</param>
/// <param name="Pieces">The data ranges to read when the chunk is partly zero (the rest is zero-filled); null to read it whole.</param>
/// <param name="Patch">When set, the chunk is rebuilt from the parent's copy and only the changed ranges are read;
/// <paramref name="Pieces"/> is the whole-chunk read to fall back on when the parent's copy cannot be used.</param>
internal sealed record ChunkRead(long Index, long Offset, int Length, IReadOnlyList<ReadPiece>? Pieces, ChunkPatch? Patch = null)
{
    /// <summary>Bytes that cross the wire for this chunk read whole (its data pieces).</summary>
    public long WholeBytesToRead => Pieces is null ? Length : Pieces.Sum(p => (long)p.Length);

    /// <summary>Bytes that cross the wire for this chunk as planned.</summary>
    public long BytesToRead => Patch?.BytesToRead ?? WholeBytesToRead;
}

/// <summary>What a disk's backup will do: chunks read in offset order, chunks recorded as zero, the rest inherited.</summary>
internal sealed class ReadPlan
{
    /// <summary>Number of chunks of the disk.</summary>
    public required long ChunkCount { get; init; }

    /// <summary>Chunks to read and submit, in offset order.</summary>
    public required IReadOnlyList<ChunkRead> Reads { get; init; }

    /// <summary>Chunks recorded as zero without reading, in order.</summary>
    public required IReadOnlyList<long> ZeroChunks { get; init; }

    /// <summary>Runs of consecutive chunks read (the "extents" of the plan).</summary>
    public required long Runs { get; init; }

    /// <summary>Bytes the reads move over NBD.</summary>
    public required long BytesToRead { get; init; }

    /// <summary>Chunks of <see cref="Reads"/> rebuilt from the parent's copy with only their changed ranges read.</summary>
    public long PatchedChunks { get; init; }

    /// <summary>Chunks neither read nor marked zero: left to the parent's index.</summary>
    public long InheritedChunks => ChunkCount - Reads.Count - ZeroChunks.Count;
}

/// <summary>
/// Turns block status into a read plan (pure). A full (no dirty map) touches every chunk; an incremental or
/// differential touches the chunks that overlap a dirty extent, plus the chunks the repository asks to refresh (F32).
/// A touched chunk that <c>base:allocation</c> reports as reading zeroes from end to end is recorded as zero (a trim
/// since the last backup restores as zeros, F19); any other touched chunk is read. Only the ZERO flag counts: a hole
/// without it may still read data (a backing file), so it is read.
/// A touched chunk that changed only in part, and whose parent copy is usable, may be patched: the parent's bytes with
/// only the changed ranges read (zeroed where they read as zeros), when that reads at most a given fraction of the chunk.
/// Outside the changed ranges the bytes are the parent's by definition of the changed-block map (it records every write
/// since the checkpoint the parent was taken at), the same trust an unchanged chunk's inheritance already rests on.
/// </summary>
internal static class ReadPlanner
{
    /// <summary>Builds the plan.</summary>
    /// <param name="diskSize">The disk size in bytes.</param>
    /// <param name="chunkSize">The chunk size of the disk's index.</param>
    /// <param name="allocation">The <c>base:allocation</c> extents, sorted by offset (gaps are treated as data).</param>
    /// <param name="dirty">The dirty-bitmap extents, sorted by offset (only those with the dirty flag count), or null for a full read.</param>
    /// <param name="refresh">Chunks that must be submitted even when clean (never patched: their parent copy is bad).</param>
    /// <param name="patchable">Whether the parent holds a usable copy of a chunk; null: never patch.</param>
    /// <param name="patchBelow">Patch a partly changed chunk when its changed data is at most this fraction of the chunk (0: never).</param>
    /// <returns>The plan.</returns>
    public static ReadPlan Plan(
        long diskSize,
        int chunkSize,
        IReadOnlyList<NbdExtent> allocation,
        IReadOnlyList<NbdExtent>? dirty,
        IReadOnlyCollection<long> refresh,
        Func<long, bool>? patchable = null,
        double patchBelow = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(diskSize);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        var count = (diskSize + chunkSize - 1) / chunkSize;
        var refreshSet = refresh.Count == 0 ? null : new HashSet<long>(refresh);
        var reads = new List<ChunkRead>();
        var zeros = new List<long>();
        long runs = 0;
        long bytes = 0;
        var previousRead = -2L;
        var allocationAt = 0;
        var dirtyAt = 0;
        long patched = 0;
        var pieces = new List<ReadPiece>();
        var changed = new List<ReadPiece>();
        for (long i = 0; i < count; i++)
        {
            var start = i * chunkSize;
            var end = Math.Min(diskSize, start + chunkSize);
            var refreshed = refreshSet?.Contains(i) ?? false;
            var changedBytes = dirty is null ? 0 : ChangedPieces(dirty, ref dirtyAt, start, end, changed);
            if (dirty is not null && changedBytes == 0 && !refreshed)
            {
                continue;
            }

            var dataBytes = DataPieces(allocation, ref allocationAt, start, end, pieces);
            if (dataBytes == 0)
            {
                zeros.Add(i);
                continue;
            }

            var length = (int)(end - start);
            IReadOnlyList<ReadPiece>? partial = dataBytes == length ? null : [.. pieces];
            ChunkPatch? patch = null;
            if (dirty is not null && !refreshed && changedBytes < length && patchBelow > 0 && (patchable?.Invoke(i) ?? false))
            {
                var inside = Intersect(pieces, changed);
                var insideBytes = inside.Sum(p => (long)p.Length);
                if (insideBytes < dataBytes && insideBytes <= patchBelow * length)
                {
                    patch = new ChunkPatch([.. changed], inside);
                    patched++;
                    dataBytes = insideBytes;
                }
            }

            reads.Add(new ChunkRead(i, start, length, partial, patch));
            bytes += dataBytes;
            if (previousRead != i - 1)
            {
                runs++;
            }

            previousRead = i;
        }

        return new ReadPlan { ChunkCount = count, Reads = reads, ZeroChunks = zeros, Runs = runs, BytesToRead = bytes, PatchedChunks = patched };
    }

    // The dirty ranges within [start, end), merged; returns their total length. Chunks come in increasing order, so the
    // cursor only moves forward (past extents that end before this chunk).
    private static long ChangedPieces(IReadOnlyList<NbdExtent> dirty, ref int cursor, long start, long end, List<ReadPiece> changed)
    {
        changed.Clear();
        while (cursor < dirty.Count && (long)dirty[cursor].End <= start)
        {
            cursor++;
        }

        long total = 0;
        for (var k = cursor; k < dirty.Count && (long)dirty[k].Offset < end; k++)
        {
            if (dirty[k].IsDirty && dirty[k].Length > 0)
            {
                total += Add(changed, Math.Max(start, (long)dirty[k].Offset), Math.Min(end, (long)dirty[k].End));
            }
        }

        return total;
    }

    // The intersection of two ordered lists of disjoint ranges.
    private static List<ReadPiece> Intersect(List<ReadPiece> a, List<ReadPiece> b)
    {
        var result = new List<ReadPiece>();
        int i = 0, j = 0;
        while (i < a.Count && j < b.Count)
        {
            var start = Math.Max(a[i].Offset, b[j].Offset);
            var aEnd = a[i].Offset + a[i].Length;
            var bEnd = b[j].Offset + b[j].Length;
            var end = Math.Min(aEnd, bEnd);
            Add(result, start, end);
            if (aEnd <= bEnd)
            {
                i++;
            }
            else
            {
                j++;
            }
        }

        return result;
    }

    // The ranges of [start, end) not reported as zero, merged; returns their total length.
    private static long DataPieces(IReadOnlyList<NbdExtent> allocation, ref int cursor, long start, long end, List<ReadPiece> pieces)
    {
        pieces.Clear();
        while (cursor < allocation.Count && (long)allocation[cursor].End <= start)
        {
            cursor++;
        }

        long total = 0;
        var at = start;
        for (var k = cursor; k < allocation.Count && at < end; k++)
        {
            var extent = allocation[k];
            var extentStart = Math.Max((long)extent.Offset, at);
            var extentEnd = Math.Min((long)extent.End, end);
            if (extentEnd <= at)
            {
                continue;
            }

            if (extentStart > at)
            {
                total += Add(pieces, at, extentStart); // a gap in the map: not known to be zero
            }

            if (!extent.IsZero)
            {
                total += Add(pieces, extentStart, extentEnd);
            }

            at = extentEnd;
        }

        if (at < end)
        {
            total += Add(pieces, at, end);
        }

        return total;
    }

    private static long Add(List<ReadPiece> pieces, long start, long end)
    {
        if (end <= start)
        {
            return 0;
        }

        if (pieces.Count > 0 && pieces[^1].Offset + pieces[^1].Length == start)
        {
            var last = pieces[^1];
            pieces[^1] = last with { Length = (int)(end - last.Offset) };
        }
        else
        {
            pieces.Add(new ReadPiece(start, (int)(end - start)));
        }

        return end - start;
    }
}
