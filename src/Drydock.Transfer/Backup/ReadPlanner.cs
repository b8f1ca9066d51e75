using Drydock.Nbd;

namespace Drydock.Transfer.Backup;

/// <summary>A byte range inside a chunk that holds data (is not reported as reading zeroes).</summary>
/// <param name="Offset">Absolute offset in the disk.</param>
/// <param name="Length">Length in bytes.</param>
internal readonly record struct ReadPiece(long Offset, int Length);

/// <summary>One chunk to read and submit.</summary>
/// <param name="Index">The chunk index.</param>
/// <param name="Offset">The chunk's offset in the disk.</param>
/// <param name="Length">The chunk's length.</param>
/// <param name="Pieces">The data ranges to read when the chunk is partly zero (the rest is zero-filled); null to read it whole.</param>
internal sealed record ChunkRead(long Index, long Offset, int Length, IReadOnlyList<ReadPiece>? Pieces)
{
    /// <summary>Bytes that cross the wire for this chunk.</summary>
    public long BytesToRead => Pieces is null ? Length : Pieces.Sum(p => (long)p.Length);
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

    /// <summary>Chunks neither read nor marked zero: left to the parent's index.</summary>
    public long InheritedChunks => ChunkCount - Reads.Count - ZeroChunks.Count;
}

/// <summary>
/// Turns block status into a read plan (pure). A full (no dirty map) touches every chunk; an incremental or
/// differential touches the chunks that overlap a dirty extent, plus the chunks the repository asks to refresh (F32).
/// A touched chunk that <c>base:allocation</c> reports as reading zeroes from end to end is recorded as zero (a trim
/// since the last backup restores as zeros, F19); any other touched chunk is read. Only the ZERO flag counts: a hole
/// without it may still read data (a backing file), so it is read.
/// </summary>
internal static class ReadPlanner
{
    /// <summary>Builds the plan.</summary>
    /// <param name="diskSize">The disk size in bytes.</param>
    /// <param name="chunkSize">The chunk size of the disk's index.</param>
    /// <param name="allocation">The <c>base:allocation</c> extents, sorted by offset (gaps are treated as data).</param>
    /// <param name="dirty">The dirty-bitmap extents, sorted by offset (only those with the dirty flag count), or null for a full read.</param>
    /// <param name="refresh">Chunks that must be submitted even when clean.</param>
    /// <returns>The plan.</returns>
    public static ReadPlan Plan(long diskSize, int chunkSize, IReadOnlyList<NbdExtent> allocation, IReadOnlyList<NbdExtent>? dirty, IReadOnlyCollection<long> refresh)
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
        var pieces = new List<ReadPiece>();
        for (long i = 0; i < count; i++)
        {
            var start = i * chunkSize;
            var end = Math.Min(diskSize, start + chunkSize);
            var touched = dirty is null
                || Overlaps(dirty, ref dirtyAt, start, end)
                || (refreshSet?.Contains(i) ?? false);
            if (!touched)
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
            reads.Add(new ChunkRead(i, start, length, partial));
            bytes += dataBytes;
            if (previousRead != i - 1)
            {
                runs++;
            }

            previousRead = i;
        }

        return new ReadPlan { ChunkCount = count, Reads = reads, ZeroChunks = zeros, Runs = runs, BytesToRead = bytes };
    }

    // Whether a dirty extent overlaps [start, end). Chunks come in increasing order, so the cursor only moves forward.
    private static bool Overlaps(IReadOnlyList<NbdExtent> dirty, ref int cursor, long start, long end)
    {
        while (cursor < dirty.Count && (long)dirty[cursor].End <= start)
        {
            cursor++;
        }

        for (var k = cursor; k < dirty.Count && (long)dirty[k].Offset < end; k++)
        {
            if (dirty[k].IsDirty && dirty[k].Length > 0 && (long)dirty[k].End > start)
            {
                return true;
            }
        }

        return false;
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
