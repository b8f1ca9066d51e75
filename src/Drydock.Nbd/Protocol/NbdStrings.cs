using System.Text;

namespace Drydock.Nbd.Protocol;

/// <summary>Strict UTF-8 handling for protocol strings (no NUL, at most 4096 bytes, valid UTF-8).</summary>
public static class NbdStrings
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Decodes a protocol string received from a peer.</summary>
    /// <param name="bytes">The raw bytes.</param>
    /// <param name="what">What the string is, for the error message.</param>
    /// <returns>The decoded string.</returns>
    /// <exception cref="NbdProtocolException">The bytes are too long, not UTF-8 or contain NUL.</exception>
    public static string Decode(ReadOnlySpan<byte> bytes, string what)
    {
        if (bytes.Length > NbdSizes.MaxString)
        {
            throw new NbdProtocolException($"{what} is {bytes.Length} bytes long; the protocol allows at most {NbdSizes.MaxString}");
        }

        if (bytes.Contains((byte)0))
        {
            throw new NbdProtocolException($"{what} contains a NUL byte");
        }

        try
        {
            return Strict.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new NbdProtocolException($"{what} is not valid UTF-8: {e.Message}");
        }
    }

    /// <summary>Decodes a free-text message (error text) leniently: invalid bytes become U+FFFD, NULs are dropped.</summary>
    /// <param name="bytes">The raw bytes.</param>
    /// <returns>Text that is safe to show.</returns>
    public static string DecodeMessage(ReadOnlySpan<byte> bytes)
    {
        var text = Encoding.UTF8.GetString(bytes);
        return text.Contains('\0', StringComparison.Ordinal) ? text.Replace("\0", string.Empty, StringComparison.Ordinal) : text;
    }

    /// <summary>Encodes a string we send, checking the protocol's rules.</summary>
    /// <param name="value">The string.</param>
    /// <param name="what">What the string is, for the error message.</param>
    /// <returns>The UTF-8 bytes.</returns>
    /// <exception cref="ArgumentException">The string is too long or contains NUL.</exception>
    public static byte[] Encode(string value, string what)
    {
        if (value.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"{what} must not contain NUL", nameof(value));
        }

        var bytes = Strict.GetBytes(value);
        if (bytes.Length > NbdSizes.MaxString)
        {
            throw new ArgumentException($"{what} is {bytes.Length} bytes of UTF-8; the protocol allows at most {NbdSizes.MaxString}", nameof(value));
        }

        return bytes;
    }
}
