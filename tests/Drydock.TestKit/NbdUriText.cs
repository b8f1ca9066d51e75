using System.Globalization;
using System.Text;

namespace Drydock.TestKit;

/// <summary>
/// Writes the NBD URIs the fixtures hand out (doc/uri.md). Kept apart from Drydock.Nbd's NbdUri on purpose:
/// the fixtures are checked with the peer tools, independently of the code under test.
/// </summary>
public static class NbdUriText
{
    /// <summary><c>nbd+unix:///EXPORT?socket=PATH</c> (or <c>nbds+unix</c> with <c>tls-certificates=DIR</c>).</summary>
    public static string ForUnix(string socketPath, string exportName, string? tlsCertificatesDirectory = null)
    {
        var builder = new StringBuilder(tlsCertificatesDirectory is null ? "nbd+unix:///" : "nbds+unix:///");
        Encode(builder, exportName, keepSlash: true);
        builder.Append("?socket=");
        Encode(builder, socketPath, keepSlash: true);
        AppendTls(builder, '&', tlsCertificatesDirectory);
        return builder.ToString();
    }

    /// <summary><c>nbd://HOST:PORT/EXPORT</c> (or <c>nbds</c> with <c>?tls-certificates=DIR</c>).</summary>
    public static string ForTcp(string host, int port, string exportName, string? tlsCertificatesDirectory = null)
    {
        var builder = new StringBuilder(tlsCertificatesDirectory is null ? "nbd://" : "nbds://");
        builder.Append(host.Contains(':', StringComparison.Ordinal) ? "[" + host + "]" : host)
            .Append(':').Append(port.ToString(CultureInfo.InvariantCulture)).Append('/');
        Encode(builder, exportName, keepSlash: true);
        AppendTls(builder, '?', tlsCertificatesDirectory);
        return builder.ToString();
    }

    private static void AppendTls(StringBuilder builder, char separator, string? tlsCertificatesDirectory)
    {
        if (tlsCertificatesDirectory is not null)
        {
            builder.Append(separator).Append("tls-certificates=");
            Encode(builder, tlsCertificatesDirectory, keepSlash: true);
        }
    }

    private static void Encode(StringBuilder builder, string value, bool keepSlash)
    {
        foreach (var b in Encoding.UTF8.GetBytes(value))
        {
            var c = (char)b;
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~' || (keepSlash && c == '/'))
            {
                builder.Append(c);
            }
            else
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }
    }
}
