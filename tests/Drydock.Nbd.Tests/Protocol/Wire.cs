namespace Drydock.Nbd.Tests.Protocol;

/// <summary>Byte vectors written the way the specification lays them out: hex fields separated by spaces.</summary>
internal static class Wire
{
    /// <summary>Parses <c>"25609513 0001 ..."</c> into bytes; spaces only separate fields.</summary>
    public static byte[] Hex(string fields) => Convert.FromHexString(fields.Replace(" ", string.Empty, StringComparison.Ordinal));

    /// <summary>Concatenates byte vectors.</summary>
    public static byte[] Concat(params ReadOnlySpan<byte[]> parts)
    {
        var total = 0;
        foreach (var part in parts)
        {
            total += part.Length;
        }

        var result = new byte[total];
        var at = 0;
        foreach (var part in parts)
        {
            part.CopyTo(result, at);
            at += part.Length;
        }

        return result;
    }
}
