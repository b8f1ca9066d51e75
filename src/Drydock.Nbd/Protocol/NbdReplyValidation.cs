namespace Drydock.Nbd.Protocol;

/// <summary>
/// Tracks which bytes of a READ reply have arrived, so that overlapping, duplicated or out-of-range
/// content chunks are rejected and a reply that ends with bytes missing is detected. Counting bytes is
/// not enough: a server could send one range twice and skip another.
/// </summary>
public sealed class NbdReadCoverage
{
    /// <summary>Cap on disjoint covered ranges, so a hostile server cannot make us grow without bound.</summary>
    public const int MaxFragments = 65_536;

    private readonly ulong _start;
    private readonly ulong _end;
    private readonly List<(ulong Start, ulong End)> _ranges = [];
    private ulong _covered;

    /// <summary>Creates a tracker for a READ of <paramref name="length"/> bytes at <paramref name="offset"/>.</summary>
    /// <param name="offset">Request offset.</param>
    /// <param name="length">Request length.</param>
    public NbdReadCoverage(ulong offset, ulong length)
    {
        _start = offset;
        _end = checked(offset + length);
    }

    /// <summary>Bytes covered so far.</summary>
    public ulong Covered => _covered;

    /// <summary>Whether every byte of the request has been covered.</summary>
    public bool IsComplete => _covered == _end - _start;

    /// <summary>Records a content or error range and checks the rules of the specification.</summary>
    /// <param name="offset">Absolute offset of the range.</param>
    /// <param name="length">Length of the range (non-zero).</param>
    /// <param name="what">The chunk type, for the error message.</param>
    /// <exception cref="NbdProtocolException">The range is empty, outside the request, or overlaps an earlier one.</exception>
    public void Add(ulong offset, ulong length, NbdReplyChunkType what)
    {
        if (length == 0)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(what)} covers zero bytes");
        }

        if (offset < _start || offset > _end || length > _end - offset)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(what)} [{offset}, +{length}) lies outside the request [{_start}, {_end})");
        }

        var end = offset + length;

        // Fast path: chunks in ascending order, the usual case.
        if (_ranges.Count == 0 || offset >= _ranges[^1].End)
        {
            if (_ranges.Count > 0 && offset == _ranges[^1].End)
            {
                _ranges[^1] = (_ranges[^1].Start, end);
            }
            else
            {
                AddFragment(_ranges.Count, offset, end);
            }

            _covered += length;
            return;
        }

        // Find the first range that ends after our start; it must begin at or after our end.
        var lo = 0;
        var hi = _ranges.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_ranges[mid].End <= offset)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        if (lo < _ranges.Count && _ranges[lo].Start < end)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(what)} [{offset}, +{length}) overlaps bytes the server already sent");
        }

        var joinsLeft = lo > 0 && _ranges[lo - 1].End == offset;
        var joinsRight = lo < _ranges.Count && _ranges[lo].Start == end;
        if (joinsLeft && joinsRight)
        {
            _ranges[lo - 1] = (_ranges[lo - 1].Start, _ranges[lo].End);
            _ranges.RemoveAt(lo);
        }
        else if (joinsLeft)
        {
            _ranges[lo - 1] = (_ranges[lo - 1].Start, end);
        }
        else if (joinsRight)
        {
            _ranges[lo] = (offset, _ranges[lo].End);
        }
        else
        {
            AddFragment(lo, offset, end);
        }

        _covered += length;
    }

    /// <summary>Checks an error offset: it must lie inside the request.</summary>
    /// <param name="offset">The offset an error chunk named.</param>
    /// <exception cref="NbdProtocolException">The offset is outside the request.</exception>
    public void CheckErrorOffset(ulong offset)
    {
        if (offset < _start || offset >= _end)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_ERROR_OFFSET offset {offset} lies outside the request [{_start}, {_end})");
        }
    }

    /// <summary>The first byte not yet covered, for error messages.</summary>
    /// <returns>The absolute offset of the first missing byte, or the request end when complete.</returns>
    public ulong FirstMissing()
    {
        var at = _start;
        foreach (var (start, end) in _ranges)
        {
            if (start > at)
            {
                return at;
            }

            at = end;
        }

        return at;
    }

    private void AddFragment(int index, ulong start, ulong end)
    {
        if (_ranges.Count >= MaxFragments)
        {
            throw new NbdProtocolException($"READ reply split into more than {MaxFragments} disjoint pieces");
        }

        _ranges.Insert(index, (start, end));
    }
}

/// <summary>
/// Validates the BLOCK_STATUS chunks of one reply: one chunk per negotiated context, known context ids,
/// non-zero extents starting at the request offset, no extent past the export end, REQ_ONE honoured.
/// </summary>
public sealed class NbdBlockStatusValidator
{
    private readonly ulong _offset;
    private readonly ulong _requestEnd;
    private readonly bool _requestOne;
    private readonly ulong _exportSize;
    private readonly IReadOnlyDictionary<uint, string> _contexts;
    private readonly HashSet<uint> _seen = [];

    /// <summary>Creates a validator for one BLOCK_STATUS request.</summary>
    /// <param name="offset">Request offset.</param>
    /// <param name="length">Request length.</param>
    /// <param name="requestOne">Whether NBD_CMD_FLAG_REQ_ONE was set.</param>
    /// <param name="exportSize">Export size: no extent may pass it.</param>
    /// <param name="contexts">Negotiated contexts by id.</param>
    public NbdBlockStatusValidator(ulong offset, uint length, bool requestOne, ulong exportSize, IReadOnlyDictionary<uint, string> contexts)
    {
        _offset = offset;
        _requestEnd = checked(offset + length);
        _requestOne = requestOne;
        _exportSize = exportSize;
        _contexts = contexts;
    }

    /// <summary>Whether a chunk arrived for every negotiated context.</summary>
    public bool IsComplete => _seen.Count == _contexts.Count;

    /// <summary>Validates one BLOCK_STATUS chunk and appends its extents.</summary>
    /// <param name="contextId">The chunk's context id.</param>
    /// <param name="descriptors">The descriptor bytes.</param>
    /// <param name="extents">Receives the extents, with absolute offsets.</param>
    /// <returns>The name of the context.</returns>
    /// <exception cref="NbdProtocolException">Any rule is broken.</exception>
    public string Accept(uint contextId, ReadOnlySpan<byte> descriptors, List<NbdExtent> extents)
    {
        if (!_contexts.TryGetValue(contextId, out var name))
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS names context id {contextId}, which was never negotiated");
        }

        if (!_seen.Add(contextId))
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for context {name} arrived twice in one reply");
        }

        var count = descriptors.Length / NbdSizes.BlockDescriptor;
        if (count == 0 || descriptors.Length % NbdSizes.BlockDescriptor != 0)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name} carries {descriptors.Length} descriptor bytes, not a positive multiple of 8");
        }

        if (_requestOne && count != 1)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name} has {count} extents although REQ_ONE asked for one");
        }

        var at = _offset;
        for (var i = 0; i < count; i++)
        {
            var descriptor = NbdTransmissionCodec.ReadDescriptor(descriptors, i);
            if (descriptor.Length == 0)
            {
                throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name}: extent {i} at offset {at} has length zero");
            }

            if (at >= _requestEnd)
            {
                // Only the final extent may reach past the requested range.
                throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name}: extent {i} starts at {at}, past the requested range ending at {_requestEnd}");
            }

            // Compared without forming at + length first: near the top of the offset space the sum would wrap.
            if (at > _exportSize || descriptor.Length > _exportSize - at)
            {
                throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name}: extent of {descriptor.Length} bytes at {at} passes the export end {_exportSize}");
            }

            var end = at + descriptor.Length;

            if (_requestOne && end > _requestEnd)
            {
                throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS for {name}: the REQ_ONE extent ends at {end}, past the request end {_requestEnd}");
            }

            extents.Add(new NbdExtent(at, descriptor.Length, descriptor.Flags));
            at = end;
        }

        return name;
    }
}
