using System.Numerics;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>
/// A sparse export in memory: the export is cut into pages, and a page exists only once written.
/// Unwritten pages are holes that read as zeroes; TRIM and WRITE_ZEROES drop whole pages again.
/// </summary>
public sealed class NbdMemoryBackend : NbdExportBackend
{
    /// <summary>Default page size: 4 KiB.</summary>
    public const int DefaultPageSize = 4096;

    private const uint HoleFlags = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);

    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, byte[]> _pages = [];
    private readonly SortedSet<ulong> _allocated = [];
    private readonly ulong _size;
    private readonly int _pageSize;
    private readonly int _pageShift;

    /// <summary>Creates an empty (all-hole) export.</summary>
    /// <param name="size">Size in bytes (positive, at most 2^63 - 1).</param>
    /// <param name="pageSize">Allocation unit: a power of two between 512 bytes and 1 MiB.</param>
    public NbdMemoryBackend(ulong size, int pageSize = DefaultPageSize)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, (ulong)long.MaxValue);
        if (pageSize is < 512 or > 1024 * 1024 || !BitOperations.IsPow2(pageSize))
        {
            throw new ArgumentOutOfRangeException(nameof(pageSize), pageSize, "must be a power of two between 512 and 1 MiB");
        }

        _size = size;
        _pageSize = pageSize;
        _pageShift = BitOperations.Log2((uint)pageSize);
    }

    /// <inheritdoc/>
    public override ulong Size => _size;

    /// <summary>The allocation unit in bytes.</summary>
    public int PageSize => _pageSize;

    /// <summary>Bytes held in allocated pages.</summary>
    public long AllocatedBytes
    {
        get
        {
            lock (_lock)
            {
                return (long)_pages.Count * _pageSize;
            }
        }
    }

    /// <inheritdoc/>
    public override bool CanZeroFast(bool noHole) => !noHole;

    /// <inheritdoc/>
    public override ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)destination.Length);
        var span = destination.Span;
        lock (_lock)
        {
            foreach (var piece in Pieces(offset, (ulong)destination.Length))
            {
                var target = span.Slice((int)piece.At, piece.Count);
                if (_pages.TryGetValue(piece.Page, out var data))
                {
                    data.AsSpan(piece.Within, piece.Count).CopyTo(target);
                }
                else
                {
                    target.Clear();
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)data.Length);
        var span = data.Span;
        lock (_lock)
        {
            foreach (var piece in Pieces(offset, (ulong)data.Length))
            {
                span.Slice((int)piece.At, piece.Count).CopyTo(GetOrAllocate(piece.Page).AsSpan(piece.Within, piece.Count));
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        lock (_lock)
        {
            foreach (var piece in Pieces(offset, length))
            {
                if (!noHole && piece.Count == _pageSize)
                {
                    Deallocate(piece.Page);
                }
                else if (noHole)
                {
                    GetOrAllocate(piece.Page).AsSpan(piece.Within, piece.Count).Clear();
                }
                else if (_pages.TryGetValue(piece.Page, out var existing))
                {
                    existing.AsSpan(piece.Within, piece.Count).Clear();
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask TrimAsync(ulong offset, ulong length, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        lock (_lock)
        {
            // Only whole pages are discarded; a partial page keeps its content, which TRIM allows.
            foreach (var piece in Pieces(offset, length))
            {
                if (piece.Count == _pageSize)
                {
                    Deallocate(piece.Page);
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    /// <inheritdoc/>
    public override ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        ArgumentOutOfRangeException.ThrowIfZero(length);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxExtents, 1);
        var end = offset + length;
        var extents = new List<NbdExtent>();
        lock (_lock)
        {
            var at = offset;
            var firstPage = offset >> _pageShift;
            var lastPage = (end - 1) >> _pageShift;
            foreach (var page in _allocated.GetViewBetween(firstPage, lastPage))
            {
                var pageStart = Math.Max(page << _pageShift, offset);
                var pageEnd = Math.Min((page + 1) << _pageShift, end);
                if (pageStart > at)
                {
                    if (!Add(extents, at, pageStart - at, HoleFlags, maxExtents))
                    {
                        return new(extents);
                    }
                }
                else if (extents.Count > 0 && extents[^1].Flags == 0 && extents[^1].End == pageStart)
                {
                    extents[^1] = extents[^1] with { Length = pageEnd - extents[^1].Offset };
                    at = pageEnd;
                    continue;
                }

                if (!Add(extents, pageStart, pageEnd - pageStart, 0, maxExtents))
                {
                    return new(extents);
                }

                at = pageEnd;
            }

            if (at < end)
            {
                Add(extents, at, end - at, HoleFlags, maxExtents);
            }
        }

        return new(extents);
    }

    private static bool Add(List<NbdExtent> extents, ulong offset, ulong length, uint flags, int maxExtents)
    {
        if (extents.Count >= maxExtents)
        {
            return false;
        }

        extents.Add(new NbdExtent(offset, length, flags));
        return true;
    }

    private byte[] GetOrAllocate(ulong page)
    {
        if (!_pages.TryGetValue(page, out var data))
        {
            data = new byte[_pageSize];
            _pages.Add(page, data);
            _allocated.Add(page);
        }

        return data;
    }

    private void Deallocate(ulong page)
    {
        if (_pages.Remove(page))
        {
            _allocated.Remove(page);
        }
    }

    private PieceEnumerable Pieces(ulong offset, ulong length) => new(offset, offset + length, _pageShift);

    /// <summary>One page touched by a range: page index, offset within the page, offset within the range, byte count.</summary>
    private readonly record struct Piece(ulong Page, int Within, ulong At, int Count);

    /// <summary>Enumerates the pages a range touches without allocating.</summary>
    private readonly struct PieceEnumerable(ulong start, ulong end, int pageShift)
    {
        public PieceEnumerator GetEnumerator() => new(start, end, pageShift);
    }

    private struct PieceEnumerator
    {
        private readonly ulong _start;
        private readonly ulong _end;
        private readonly int _pageShift;
        private ulong _next;

        public PieceEnumerator(ulong start, ulong end, int pageShift)
        {
            _start = start;
            _end = end;
            _pageShift = pageShift;
            _next = start;
        }

        public Piece Current { get; private set; }

        public bool MoveNext()
        {
            if (_next >= _end)
            {
                return false;
            }

            var pageSize = 1UL << _pageShift;
            var within = _next & (pageSize - 1);
            var count = Math.Min(pageSize - within, _end - _next);
            Current = new Piece(_next >> _pageShift, (int)within, _next - _start, (int)count);
            _next += count;
            return true;
        }
    }
}
