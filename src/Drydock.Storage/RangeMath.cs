namespace Drydock.Storage;

/// <summary>Range arithmetic shared by the stores that slice objects themselves.</summary>
public static class RangeMath
{
    /// <summary>Turns a requested range into an offset and a length inside an object of <paramref name="objectLength"/> bytes.</summary>
    /// <param name="location">The store location, for errors.</param>
    /// <param name="name">The object name, for errors.</param>
    /// <param name="range">The requested range.</param>
    /// <param name="objectLength">The object's size.</param>
    /// <returns>The offset and the number of bytes to return (clipped at the end of the object).</returns>
    public static (long Offset, long Length) Resolve(string location, string name, BlobRange range, long objectLength)
    {
        if (range.IsAll)
        {
            return (0, objectLength);
        }

        if (range.Offset < 0 || range.Length is <= 0 || range.Offset >= objectLength)
        {
            throw new BlobInvalidRangeException(location, name, range);
        }

        var available = objectLength - range.Offset;
        var length = range.Length is { } l ? Math.Min(l, available) : available;
        return (range.Offset, length);
    }
}
