namespace Drydock.Hypervisor.Sim;

/// <summary>
/// A simulated persistent dirty bitmap on a disk: one bit per <see cref="Granularity"/> bytes, recording writes while
/// <see cref="Recording"/>. Mirrors QEMU's behaviour across stops: a bitmap is stored in the image on a clean stop;
/// after a crash a stored bitmap comes back <see cref="Inconsistent"/> and one never stored is gone.
/// Not thread-safe: the owning disk serialises access.
/// </summary>
public sealed class SimBitmap
{
    private ulong[] _bits;

    internal SimBitmap(string name, ulong diskSize, uint granularity)
    {
        Name = name;
        Granularity = granularity;
        _bits = new ulong[Words(diskSize, granularity)];
    }

    /// <summary>The bitmap's name.</summary>
    public string Name { get; }

    /// <summary>Bytes per bit.</summary>
    public uint Granularity { get; }

    /// <summary>Whether writes are recorded.</summary>
    public bool Recording { get; internal set; } = true;

    /// <summary>Whether it is unusable after an unclean stop.</summary>
    public bool Inconsistent { get; internal set; }

    /// <summary>Whether it was stored in the image by a clean stop since it was created.</summary>
    public bool Stored { get; internal set; }

    /// <summary>Bytes marked dirty.</summary>
    public ulong DirtyBytes => (ulong)_bits.Sum(w => (long)ulong.PopCount(w)) * Granularity;

    internal void Mark(ulong offset, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        var first = offset / Granularity;
        var last = (offset + length - 1) / Granularity;
        for (var bit = first; bit <= last && bit / 64 < (ulong)_bits.Length; bit++)
        {
            _bits[bit / 64] |= 1UL << (int)(bit % 64);
        }
    }

    /// <summary>The dirty ranges, merged, clipped to <paramref name="diskSize"/>.</summary>
    /// <param name="diskSize">The disk's size.</param>
    /// <returns>(offset, length) pairs in order.</returns>
    public IReadOnlyList<(ulong Offset, ulong Length)> DirtyRanges(ulong diskSize)
    {
        var ranges = new List<(ulong Offset, ulong Length)>();
        ulong? start = null;
        var bits = (ulong)_bits.Length * 64;
        for (ulong bit = 0; bit <= bits; bit++)
        {
            var set = bit < bits && (_bits[bit / 64] & (1UL << (int)(bit % 64))) != 0 && bit * Granularity < diskSize;
            if (set && start is null)
            {
                start = bit;
            }
            else if (!set && start is { } s)
            {
                var from = s * Granularity;
                ranges.Add((from, Math.Min(bit * Granularity, diskSize) - from));
                start = null;
            }
        }

        return ranges;
    }

    internal SimBitmap Copy(string name, ulong diskSize)
    {
        var copy = new SimBitmap(name, diskSize, Granularity) { Recording = false };
        Array.Copy(_bits, copy._bits, Math.Min(_bits.Length, copy._bits.Length));
        return copy;
    }

    internal void Resize(ulong diskSize) => Array.Resize(ref _bits, Words(diskSize, Granularity));

    private static int Words(ulong size, uint granularity) => checked((int)((size + granularity - 1) / granularity / 64 + 1));
}
