namespace Drydock.Nbd.Client;

/// <summary>
/// Builds complete per-context maps of a range from successive BLOCK_STATUS replies. Each context keeps
/// its own cursor because a server may answer different lengths for different contexts; the next request
/// starts at the lowest cursor. Adjacent extents with equal flags are merged.
/// </summary>
internal sealed class NbdExtentWalker
{
    private readonly IReadOnlyList<string> _contexts;
    private readonly ulong _end;
    private readonly Dictionary<string, List<NbdExtent>> _maps = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ulong> _cursors = new(StringComparer.Ordinal);

    public NbdExtentWalker(IReadOnlyList<string> contexts, ulong start, ulong end)
    {
        _contexts = contexts;
        _end = end;
        foreach (var context in contexts)
        {
            _maps[context] = [];
            _cursors[context] = start;
        }
    }

    /// <summary>Where the next request should start, or null when every context is mapped to the end.</summary>
    public ulong? Next
    {
        get
        {
            ulong? lowest = null;
            foreach (var cursor in _cursors.Values)
            {
                if (cursor < _end && (lowest is null || cursor < lowest))
                {
                    lowest = cursor;
                }
            }

            return lowest;
        }
    }

    /// <summary>The maps, valid once <see cref="Next"/> is null.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<NbdExtent>> Result
        => _maps.ToDictionary(pair => pair.Key, pair => (IReadOnlyList<NbdExtent>)pair.Value, StringComparer.Ordinal);

    /// <summary>Takes in the reply to a request that started at <paramref name="at"/>.</summary>
    /// <param name="at">The request offset (the lowest cursor).</param>
    /// <param name="reply">Extents by context, each list starting at <paramref name="at"/>.</param>
    /// <exception cref="NbdProtocolException">A context is missing or the walk makes no progress.</exception>
    public void Accept(ulong at, IReadOnlyDictionary<string, List<NbdExtent>> reply)
    {
        var before = Next;
        foreach (var context in _contexts)
        {
            if (!reply.TryGetValue(context, out var extents))
            {
                throw new NbdProtocolException($"BLOCK_STATUS reply at offset {at} has no extents for context {context}");
            }

            var cursor = _cursors[context];
            var map = _maps[context];
            foreach (var extent in extents)
            {
                if (extent.End <= cursor || cursor >= _end)
                {
                    continue;
                }

                var start = Math.Max(extent.Offset, cursor);
                if (start != cursor)
                {
                    throw new NbdProtocolException($"BLOCK_STATUS reply for {context} leaves a gap at offset {cursor}");
                }

                var stop = Math.Min(extent.End, _end);
                if (map.Count > 0 && map[^1].End == start && map[^1].Flags == extent.Flags)
                {
                    map[^1] = map[^1] with { Length = stop - map[^1].Offset };
                }
                else
                {
                    map.Add(new NbdExtent(start, stop - start, extent.Flags));
                }

                cursor = stop;
            }

            _cursors[context] = cursor;
        }

        if (Next is { } after && before is { } previous && after <= previous)
        {
            throw new NbdProtocolException($"BLOCK_STATUS made no forward progress at offset {previous}");
        }
    }
}
