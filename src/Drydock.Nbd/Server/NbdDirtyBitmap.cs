using System.Numerics;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>
/// A named dirty bitmap of an export, served as the metadata context <c>qemu:dirty-bitmap:NAME</c>:
/// one bit per <see cref="Granularity"/> bytes, set for every range written, zeroed or trimmed while the
/// bitmap is enabled. Code uses it as a checkpoint: read the dirty ranges, then <see cref="Clear"/>.
/// Thread-safe.
/// </summary>
public sealed class NbdDirtyBitmap
{
    /// <summary>Default granularity: 64 KiB, as QEMU uses.</summary>
    public const uint DefaultGranularity = 64 * 1024;

    /// <summary>Most granules a bitmap may track (2^31: a 256 MiB bitmap).</summary>
    public const ulong MaxGranules = 1UL << 31;

    private readonly Lock _lock = new();
    private readonly ulong[] _words;
    private readonly ulong _granules;
    private readonly int _shift;
    private bool _enabled;

    internal NbdDirtyBitmap(string name, ulong size, uint granularity, bool enabled)
    {
        if (granularity < 512 || !BitOperations.IsPow2(granularity))
        {
            throw new ArgumentOutOfRangeException(nameof(granularity), granularity, "must be a power of two of at least 512 bytes");
        }

        _shift = BitOperations.Log2(granularity);
        _granules = (size >> _shift) + ((size & (granularity - 1UL)) != 0 ? 1UL : 0UL);
        if (_granules > MaxGranules)
        {
            throw new ArgumentOutOfRangeException(nameof(granularity), granularity, $"a {size}-byte export needs {_granules} bits at this granularity; the most is {MaxGranules}");
        }

        Name = name;
        Size = size;
        Granularity = granularity;
        _enabled = enabled;
        _words = new ulong[(_granules + 63) / 64];
    }

    /// <summary>The bitmap's name (the context is <c>qemu:dirty-bitmap:</c> + name).</summary>
    public string Name { get; }

    /// <summary>The metadata context name that serves the bitmap.</summary>
    public string ContextName => NbdContexts.DirtyBitmap(Name);

    /// <summary>Bytes covered by one bit.</summary>
    public uint Granularity { get; }

    /// <summary>Size of the export the bitmap covers.</summary>
    public ulong Size { get; }

    /// <summary>Whether writes are recorded.</summary>
    public bool IsEnabled
    {
        get
        {
            lock (_lock)
            {
                return _enabled;
            }
        }
    }

    /// <summary>Bytes marked dirty (whole granules; the last one clipped to the export size).</summary>
    public ulong DirtyBytes
    {
        get
        {
            ulong total = 0;
            foreach (var extent in GetDirtyRanges())
            {
                total += extent.Length;
            }

            return total;
        }
    }

    /// <summary>Starts recording writes.</summary>
    public void Enable()
    {
        lock (_lock)
        {
            _enabled = true;
        }
    }

    /// <summary>Stops recording writes; the bits already set stay.</summary>
    public void Disable()
    {
        lock (_lock)
        {
            _enabled = false;
        }
    }

    /// <summary>Marks everything clean.</summary>
    public void Clear()
    {
        lock (_lock)
        {
            Array.Clear(_words);
        }
    }

    /// <summary>Marks every granule that overlaps a range dirty, whether or not the bitmap is enabled.</summary>
    /// <param name="offset">Start of the range.</param>
    /// <param name="length">Length of the range.</param>
    public void MarkDirty(ulong offset, ulong length) => Mark(offset, length, onlyWhenEnabled: false);

    /// <summary>Records a write: marks its range dirty if the bitmap is enabled.</summary>
    internal void Record(ulong offset, ulong length) => Mark(offset, length, onlyWhenEnabled: true);

    /// <summary>Whether the granule holding <paramref name="offset"/> is dirty.</summary>
    /// <param name="offset">An offset inside the export.</param>
    /// <returns>True when dirty.</returns>
    public bool IsDirty(ulong offset)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(offset, Size);
        var granule = offset >> _shift;
        lock (_lock)
        {
            return Get(granule);
        }
    }

    /// <summary>The dirty ranges, merged, in ascending order, with <see cref="NbdContexts.DirtyFlag"/> set.</summary>
    /// <returns>The dirty extents.</returns>
    public IReadOnlyList<NbdExtent> GetDirtyRanges()
        => [.. GetExtents(0, Size).Where(extent => extent.IsDirty)];

    /// <summary>
    /// Consecutive extents that cover a range, alternating dirty (<see cref="NbdContexts.DirtyFlag"/>) and
    /// clean (0), as <c>NBD_CMD_BLOCK_STATUS</c> reports them.
    /// </summary>
    /// <param name="offset">Start of the range.</param>
    /// <param name="length">Length of the range (clipped to the export end).</param>
    /// <param name="maxExtents">Most extents to return; then they cover only a prefix of the range.</param>
    /// <returns>The extents.</returns>
    public IReadOnlyList<NbdExtent> GetExtents(ulong offset, ulong length, int maxExtents = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, Size);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxExtents, 1);
        var end = offset + Math.Min(length, Size - offset);
        var extents = new List<NbdExtent>();
        lock (_lock)
        {
            var at = offset;
            while (at < end && extents.Count < maxExtents)
            {
                var granule = at >> _shift;
                var dirty = Get(granule);
                var next = Find(granule + 1, !dirty);
                var stop = next >= _granules ? end : Math.Min(next << _shift, end);
                extents.Add(new NbdExtent(at, stop - at, dirty ? NbdContexts.DirtyFlag : 0));
                at = stop;
            }
        }

        return extents;
    }

    private void Mark(ulong offset, ulong length, bool onlyWhenEnabled)
    {
        CheckRange(offset, length);
        if (length == 0)
        {
            return;
        }

        var first = offset >> _shift;
        var last = (offset + length - 1) >> _shift;
        lock (_lock)
        {
            if (onlyWhenEnabled && !_enabled)
            {
                return;
            }

            for (var word = first / 64; word <= last / 64; word++)
            {
                var low = word == first / 64 ? (int)(first % 64) : 0;
                var high = word == last / 64 ? (int)(last % 64) : 63;
                var mask = (high == 63 ? ulong.MaxValue : (1UL << (high + 1)) - 1) & ~((1UL << low) - 1);
                _words[word] |= mask;
            }
        }
    }

    private void CheckRange(ulong offset, ulong length)
    {
        if (offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range [{offset}, +{length}) passes the export end {Size}");
        }
    }

    // Caller holds the lock.
    private bool Get(ulong granule) => (_words[granule / 64] & (1UL << (int)(granule % 64))) != 0;

    // The first granule at or after `from` whose bit equals `value`, or _granules when there is none. Caller holds the lock.
    private ulong Find(ulong from, bool value)
    {
        if (from >= _granules)
        {
            return _granules;
        }

        var word = from / 64;
        var bits = (value ? _words[word] : ~_words[word]) & (ulong.MaxValue << (int)(from % 64));
        while (bits == 0)
        {
            if (++word >= (ulong)_words.Length)
            {
                return _granules;
            }

            bits = value ? _words[word] : ~_words[word];
        }

        return Math.Min((word * 64) + (ulong)BitOperations.TrailingZeroCount(bits), _granules);
    }
}
