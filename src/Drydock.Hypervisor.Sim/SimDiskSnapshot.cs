using Drydock.Nbd;
using Drydock.Nbd.Protocol;

namespace Drydock.Hypervisor.Sim;

/// <summary>Fleece space shared by the disks of one capture; when it runs out the snapshot breaks (F17).</summary>
internal sealed class SimFleeceBudget(long limit)
{
    private long _used;

    public long Used => Interlocked.Read(ref _used);

    public bool TryTake(long bytes)
    {
        if (Interlocked.Add(ref _used, bytes) <= limit)
        {
            return true;
        }

        Interlocked.Add(ref _used, -bytes);
        return false;
    }
}

/// <summary>
/// A copy-on-write point-in-time view of a disk: before the live data of a chunk changes for the first time, its old
/// content is kept here (charged to the fleece budget). Reads take kept chunks from here and the rest from the live
/// storage. Called under the disk's change lock.
/// </summary>
internal sealed class SimDiskSnapshot(SimDisk disk, SimFleeceBudget budget, Action<SimDiskSnapshot> broke)
{
    public const int ChunkSize = 64 * 1024;
    private const uint HoleFlags = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);

    private readonly Dictionary<long, byte[]?> _kept = [];
    private readonly SortedSet<long> _keptIndex = [];

    public SimDisk Disk { get; } = disk;

    public ulong Size { get; } = disk.Size;

    /// <summary>Set when the fleece ran out: the view is no longer the point in time.</summary>
    public bool Broken { get; private set; }

    /// <summary>Set when the capture ended or the domain went away.</summary>
    public bool Closed { get; set; }

    public void ThrowIfUnreadable()
    {
        if (Closed)
        {
            throw new IOException($"The capture of disk '{Disk.Target}' has ended.");
        }

        if (Broken)
        {
            throw new IOException($"The snapshot of disk '{Disk.Target}' is broken: the fleece space ran out.");
        }
    }

    public async ValueTask PreserveAsync(ulong offset, ulong length, CancellationToken cancellationToken)
    {
        if (Broken || Closed)
        {
            return;
        }

        var first = (long)(offset / ChunkSize);
        var last = (long)((Math.Min(offset + length, Size) - 1) / ChunkSize);
        for (var chunk = first; chunk <= last; chunk++)
        {
            if (_kept.ContainsKey(chunk))
            {
                continue;
            }

            var start = (ulong)chunk * ChunkSize;
            var data = new byte[(int)Math.Min(ChunkSize, Size - start)];
            await Disk.Storage.ReadAsync(start, data, cancellationToken);
            if (data.AsSpan().ContainsAnyExcept((byte)0))
            {
                if (!budget.TryTake(data.Length))
                {
                    // Break the snapshot, not the guest: the write goes on.
                    Broken = true;
                    _kept.Clear();
                    _keptIndex.Clear();
                    broke(this);
                    return;
                }

                _kept[chunk] = data;
            }
            else
            {
                _kept[chunk] = null;
            }

            _keptIndex.Add(chunk);
        }
    }

    public async ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var at = 0;
        while (at < destination.Length)
        {
            var position = offset + (ulong)at;
            var chunk = (long)(position / ChunkSize);
            var within = (int)(position % ChunkSize);
            var count = Math.Min(ChunkSize - within, destination.Length - at);
            if (_kept.TryGetValue(chunk, out var kept))
            {
                if (kept is null)
                {
                    destination.Span.Slice(at, count).Clear();
                }
                else
                {
                    kept.AsSpan(within, count).CopyTo(destination.Span[at..]);
                }
            }
            else
            {
                await Disk.Storage.ReadAsync(position, destination.Slice(at, count), cancellationToken);
            }

            at += count;
        }
    }

    public async ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken)
    {
        var end = offset + length;
        var firstChunk = (long)(offset / ChunkSize);
        var lastChunk = (long)((end - 1) / ChunkSize);
        var kept = _keptIndex.GetViewBetween(firstChunk, lastChunk);
        if (kept.Count == 0)
        {
            return await Disk.Storage.GetAllocationAsync(offset, length, maxExtents, cancellationToken);
        }

        // Kept chunks report what they hold; the ranges between them report the live storage's allocation.
        var extents = new List<NbdExtent>();
        var at = offset;
        foreach (var chunk in kept)
        {
            var chunkStart = Math.Max((ulong)chunk * ChunkSize, offset);
            if (chunkStart > at)
            {
                extents.AddRange(await Disk.Storage.GetAllocationAsync(at, chunkStart - at, int.MaxValue, cancellationToken));
                at = chunkStart;
            }

            var chunkEnd = Math.Min(((ulong)chunk + 1) * ChunkSize, end);
            extents.Add(new NbdExtent(at, chunkEnd - at, _kept[chunk] is null ? HoleFlags : 0));
            at = chunkEnd;
        }

        if (at < end)
        {
            extents.AddRange(await Disk.Storage.GetAllocationAsync(at, end - at, int.MaxValue, cancellationToken));
        }

        return Coalesce(extents, offset, maxExtents);
    }

    private static List<NbdExtent> Coalesce(List<NbdExtent> extents, ulong offset, int maxExtents)
    {
        var merged = new List<NbdExtent>();
        var at = offset;
        foreach (var extent in extents)
        {
            // The storage may answer for a prefix only: keep the extents contiguous from the start.
            if (extent.Offset != at || extent.Length == 0)
            {
                break;
            }

            if (merged.Count > 0 && merged[^1].Flags == extent.Flags)
            {
                merged[^1] = merged[^1] with { Length = merged[^1].Length + extent.Length };
            }
            else
            {
                if (merged.Count == maxExtents)
                {
                    break;
                }

                merged.Add(extent);
            }

            at = extent.End;
        }

        return merged;
    }
}
