using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd;

/// <summary>
/// An NBD URI as the NBD URI specification defines it (NetworkBlockDevice/nbd doc/uri.md), parsed by the
/// rules of RFC 3986: <c>nbd://host:port/export</c>, <c>nbds://…</c>, <c>nbd+unix:///export?socket=PATH</c>
/// and <c>nbds+unix:///…</c>, with the <c>tls-*</c> query parameters of the specification and of libnbd.
/// </summary>
/// <remarks>
/// <para>Parsing is strict: characters RFC 3986 does not allow in a component must be percent-encoded,
/// unknown query parameters are diagnosed (except experimental <c>x-…</c> ones, which are kept), duplicate
/// parameters, fragments, passwords in the userinfo and <c>+vsock</c> schemes are refused. Every error is an
/// <see cref="NbdUriException"/> whose message names the offending part.</para>
/// <para>Choices the specification leaves to the client: a TCP URI must name a host; a Unix-domain URI may
/// carry a user name (for TLS-PSK) but no host or port; a <c>socket</c> parameter on a TCP URI is an error;
/// <c>tls-*</c> parameters on <c>nbd</c>/<c>nbd+unix</c> are kept but do not make TLS required.</para>
/// <para>Sockets in the Linux abstract namespace are supported: a <c>socket</c> value that begins with NUL
/// (<c>?socket=%00name</c>) gives a <see cref="SocketPath"/> that begins with <c>'\0'</c>, which is how
/// <see cref="System.Net.Sockets.UnixDomainSocketEndPoint"/> names them. NUL anywhere else is refused.</para>
/// <para>Instances are immutable. <see cref="ToString"/> gives a canonical URI (lower-case scheme and host,
/// default port omitted, parameters in a fixed order) that parses back to an equal instance.</para>
/// </remarks>
public sealed class NbdUri : IEquatable<NbdUri>
{
    /// <summary>The port assigned to NBD by IANA, used when a TCP URI names none.</summary>
    public const int DefaultPort = 10809;

    private const string SocketKey = "socket";
    private const string TlsTypeKey = "tls-type";
    private const string TlsHostnameKey = "tls-hostname";
    private const string TlsVerifyPeerKey = "tls-verify-peer";
    private const string TlsCertificatesKey = "tls-certificates";
    private const string TlsPskFileKey = "tls-psk-file";
    private const string TlsUsernameKey = "tls-username";
    private const string ExperimentalPrefix = "x-";
    private const string KnownParameters =
        "socket, tls-type, tls-hostname, tls-verify-peer, tls-certificates, tls-psk-file, tls-username";

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly string _canonical;

    private NbdUri(
        NbdTransport transport,
        bool tlsRequired,
        string? userName,
        string? host,
        int port,
        string? socketPath,
        string exportName,
        NbdTlsType? tlsType,
        string? tlsHostname,
        bool tlsVerifyPeer,
        string? tlsCertificates,
        string? tlsPskFile,
        string? tlsUsername,
        IReadOnlyList<KeyValuePair<string, string>> experimentalParameters)
    {
        Transport = transport;
        TlsRequired = tlsRequired;
        UserName = userName;
        Host = host;
        Port = port;
        SocketPath = socketPath;
        ExportName = exportName;
        TlsType = tlsType;
        TlsHostname = tlsHostname;
        TlsVerifyPeer = tlsVerifyPeer;
        TlsCertificates = tlsCertificates;
        TlsPskFile = tlsPskFile;
        TlsUsername = tlsUsername;
        ExperimentalParameters = experimentalParameters;
        _canonical = Format();
    }

    /// <summary>The scheme, lower case: <c>nbd</c>, <c>nbds</c>, <c>nbd+unix</c> or <c>nbds+unix</c>.</summary>
    public string Scheme => (Transport, TlsRequired) switch
    {
        (NbdTransport.Tcp, false) => "nbd",
        (NbdTransport.Tcp, true) => "nbds",
        (NbdTransport.Unix, false) => "nbd+unix",
        _ => "nbds+unix",
    };

    /// <summary>TCP or a Unix-domain socket.</summary>
    public NbdTransport Transport { get; }

    /// <summary>
    /// True for <c>nbds</c> and <c>nbds+unix</c>: the connection must fail when TLS cannot be negotiated
    /// (no plaintext fallback).
    /// </summary>
    public bool TlsRequired { get; }

    /// <summary>
    /// The host of a TCP URI: a lower-case host name, an IPv4 address, or an IPv6 address without its
    /// brackets (with <c>%zone</c> when the URI had a zone identifier). Null for Unix-domain URIs.
    /// </summary>
    public string? Host { get; }

    /// <summary>
    /// The TCP port, 1 to 65535; <see cref="DefaultPort"/> (10809) when the URI names none, and for Unix-domain
    /// URIs, where it is unused.
    /// </summary>
    public int Port { get; }

    /// <summary>
    /// The Unix-domain socket (the <c>socket</c> parameter, percent-decoded) of a <c>+unix</c> URI; null for
    /// TCP. Begins with <c>'\0'</c> for a socket in the Linux abstract namespace.
    /// </summary>
    public string? SocketPath { get; }

    /// <summary>True when <see cref="SocketPath"/> names a socket in the Linux abstract namespace.</summary>
    public bool IsAbstractSocket => SocketPath is [(char)0, ..];

    /// <summary>
    /// The export name: the URI path without its leading <c>/</c>, percent-decoded; empty when the path is
    /// empty or <c>/</c>. At most 4096 UTF-8 bytes, never containing NUL.
    /// </summary>
    public string ExportName { get; }

    /// <summary>The user name of the authority's userinfo, percent-decoded; null when absent.</summary>
    public string? UserName { get; }

    /// <summary>The <c>tls-type</c> parameter; null when absent (the client picks, X.509 for Drydock).</summary>
    public NbdTlsType? TlsType { get; }

    /// <summary>The <c>tls-hostname</c> parameter: the name to verify the server certificate against.</summary>
    public string? TlsHostname { get; }

    /// <summary>The <c>tls-verify-peer</c> parameter (<c>0</c> or <c>1</c>); true when absent.</summary>
    public bool TlsVerifyPeer { get; }

    /// <summary>The <c>tls-certificates</c> parameter: a directory holding <c>ca-cert.pem</c> and the client's
    /// <c>client-cert.pem</c>/<c>client-key.pem</c>.</summary>
    public string? TlsCertificates { get; }

    /// <summary>The <c>tls-psk-file</c> parameter: a file of pre-shared keys.</summary>
    public string? TlsPskFile { get; }

    /// <summary>The <c>tls-username</c> parameter: the identity to use with TLS-PSK.</summary>
    public string? TlsUsername { get; }

    /// <summary>Experimental <c>x-…</c> query parameters, decoded, in the order they appeared.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> ExperimentalParameters { get; }

    /// <summary>Parses an NBD URI.</summary>
    /// <param name="uri">The URI text.</param>
    /// <returns>The parsed URI.</returns>
    /// <exception cref="NbdUriException">The text is not a valid NBD URI; the message says which part is wrong.</exception>
    public static NbdUri Parse(string uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        return Parser.Parse(uri);
    }

    /// <summary>Parses an NBD URI without throwing.</summary>
    /// <param name="uri">The URI text; null gives false.</param>
    /// <param name="result">The parsed URI, or null when <paramref name="uri"/> is not a valid NBD URI.</param>
    /// <returns>True when <paramref name="uri"/> is a valid NBD URI.</returns>
    public static bool TryParse([NotNullWhen(true)] string? uri, [NotNullWhen(true)] out NbdUri? result)
    {
        if (uri is null)
        {
            result = null;
            return false;
        }

        try
        {
            result = Parser.Parse(uri);
            return true;
        }
        catch (NbdUriException)
        {
            result = null;
            return false;
        }
    }

    /// <summary>Builds an <c>nbd+unix</c> URI for an export served on a Unix-domain socket.</summary>
    /// <param name="socketPath">The socket path; a leading <c>'\0'</c> names an abstract socket.</param>
    /// <param name="exportName">The export name; empty for the default export.</param>
    /// <returns>The URI.</returns>
    /// <exception cref="NbdUriException">The socket path or export name is not allowed.</exception>
    public static NbdUri ForUnixSocket(string socketPath, string exportName = "")
    {
        ArgumentNullException.ThrowIfNull(socketPath);
        ArgumentNullException.ThrowIfNull(exportName);
        CheckSocketPath(socketPath);
        CheckExportName(exportName);
        return new NbdUri(NbdTransport.Unix, tlsRequired: false, userName: null, host: null, DefaultPort, socketPath,
            exportName, tlsType: null, tlsHostname: null, tlsVerifyPeer: true, tlsCertificates: null, tlsPskFile: null,
            tlsUsername: null, []);
    }

    /// <summary>Builds an <c>nbd</c> URI for an export served over TCP.</summary>
    /// <param name="host">A host name, an IPv4 address, or an IPv6 address (with or without brackets).</param>
    /// <param name="port">The TCP port, 1 to 65535.</param>
    /// <param name="exportName">The export name; empty for the default export.</param>
    /// <returns>The URI.</returns>
    /// <exception cref="NbdUriException">The host, port or export name is not allowed.</exception>
    public static NbdUri ForTcp(string host, int port = DefaultPort, string exportName = "")
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(exportName);
        var normalizedHost = host is ['[', .., ']'] ? host[1..^1] : host;
        normalizedHost = CheckHost(normalizedHost, bracketed: normalizedHost.Contains(':', StringComparison.Ordinal));
        CheckPort(port);
        CheckExportName(exportName);
        return new NbdUri(NbdTransport.Tcp, tlsRequired: false, userName: null, normalizedHost, port, socketPath: null,
            exportName, tlsType: null, tlsHostname: null, tlsVerifyPeer: true, tlsCertificates: null, tlsPskFile: null,
            tlsUsername: null, []);
    }

    /// <summary>
    /// A copy that requires TLS (scheme <c>nbds</c> or <c>nbds+unix</c>) with the given TLS parameters; a
    /// null argument keeps the current value.
    /// </summary>
    /// <param name="certificatesDirectory">The <c>tls-certificates</c> directory.</param>
    /// <param name="hostname">The <c>tls-hostname</c> to verify the server certificate against.</param>
    /// <param name="verifyPeer">The <c>tls-verify-peer</c> setting.</param>
    /// <param name="type">The <c>tls-type</c>.</param>
    /// <returns>The new URI.</returns>
    public NbdUri WithTls(string? certificatesDirectory = null, string? hostname = null, bool? verifyPeer = null, NbdTlsType? type = null)
    {
        CheckOptionalValue(TlsCertificatesKey, certificatesDirectory);
        CheckOptionalValue(TlsHostnameKey, hostname);
        return new NbdUri(Transport, tlsRequired: true, UserName, Host, Port, SocketPath, ExportName, type ?? TlsType,
            hostname ?? TlsHostname, verifyPeer ?? TlsVerifyPeer, certificatesDirectory ?? TlsCertificates, TlsPskFile,
            TlsUsername, ExperimentalParameters);
    }

    /// <summary>A copy naming another export on the same server.</summary>
    /// <param name="exportName">The export name; empty for the default export.</param>
    /// <returns>The new URI.</returns>
    /// <exception cref="NbdUriException">The export name is not allowed.</exception>
    public NbdUri WithExportName(string exportName)
    {
        ArgumentNullException.ThrowIfNull(exportName);
        CheckExportName(exportName);
        return new NbdUri(Transport, TlsRequired, UserName, Host, Port, SocketPath, exportName, TlsType, TlsHostname,
            TlsVerifyPeer, TlsCertificates, TlsPskFile, TlsUsername, ExperimentalParameters);
    }

    /// <summary>The canonical form of this URI, which <see cref="Parse"/> turns back into an equal instance.</summary>
    /// <returns>The URI text.</returns>
    public override string ToString() => _canonical;

    /// <inheritdoc/>
    public bool Equals(NbdUri? other) => other is not null && string.Equals(_canonical, other._canonical, StringComparison.Ordinal);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as NbdUri);

    /// <inheritdoc/>
    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(_canonical);

    private string Format()
    {
        var builder = new StringBuilder(64);
        builder.Append(Scheme).Append("://");
        if (UserName is not null)
        {
            PercentEncode(builder, UserName, CharClass.UserInfo);
            builder.Append('@');
        }

        if (Host is not null)
        {
            if (Host.Contains(':', StringComparison.Ordinal))
            {
                var zone = Host.IndexOf('%', StringComparison.Ordinal);
                builder.Append('[');
                if (zone < 0)
                {
                    builder.Append(Host);
                }
                else
                {
                    builder.Append(Host, 0, zone).Append("%25");
                    PercentEncode(builder, Host[(zone + 1)..], CharClass.Unreserved);
                }

                builder.Append(']');
            }
            else
            {
                PercentEncode(builder, Host, CharClass.RegName);
            }

            if (Port != DefaultPort)
            {
                builder.Append(':').Append(Port.ToString(CultureInfo.InvariantCulture));
            }
        }

        builder.Append('/');
        PercentEncode(builder, ExportName, CharClass.Path);

        var separator = '?';
        void Parameter(string key, string? value)
        {
            if (value is null)
            {
                return;
            }

            builder.Append(separator);
            separator = '&';
            PercentEncode(builder, key, CharClass.QueryValue);
            builder.Append('=');
            PercentEncode(builder, value, CharClass.QueryValue);
        }

        Parameter(SocketKey, SocketPath);
        Parameter(TlsTypeKey, TlsType switch
        {
            NbdTlsType.X509 => "x509",
            NbdTlsType.Anonymous => "anon",
            NbdTlsType.Psk => "psk",
            _ => null,
        });
        Parameter(TlsHostnameKey, TlsHostname);
        Parameter(TlsVerifyPeerKey, TlsVerifyPeer ? null : "0");
        Parameter(TlsCertificatesKey, TlsCertificates);
        Parameter(TlsPskFileKey, TlsPskFile);
        Parameter(TlsUsernameKey, TlsUsername);
        foreach (var (key, value) in ExperimentalParameters)
        {
            Parameter(key, value);
        }

        return builder.ToString();
    }

    private static NbdUriException Error(NbdUriComponent component, string detail) => new(component, "Invalid NBD URI: " + detail);

    private static void CheckPort(int port)
    {
        if (port is < 1 or > 65535)
        {
            throw Error(NbdUriComponent.Port, $"port {port.ToString(CultureInfo.InvariantCulture)} is out of range (1 to 65535).");
        }
    }

    private static void CheckExportName(string exportName)
    {
        if (exportName.Contains('\0', StringComparison.Ordinal))
        {
            throw Error(NbdUriComponent.ExportName, "the export name contains NUL, which NBD export names may not.");
        }

        int length;
        try
        {
            length = StrictUtf8.GetByteCount(exportName);
        }
        catch (EncoderFallbackException)
        {
            throw Error(NbdUriComponent.ExportName, "the export name is not valid Unicode (unpaired surrogate).");
        }

        if (length > NbdSizes.MaxString)
        {
            throw Error(NbdUriComponent.ExportName,
                $"the export name is {length.ToString(CultureInfo.InvariantCulture)} UTF-8 bytes long; NBD allows at most {NbdSizes.MaxString.ToString(CultureInfo.InvariantCulture)}.");
        }
    }

    private static void CheckSocketPath(string socketPath)
    {
        if (socketPath.Length == 0)
        {
            throw Error(NbdUriComponent.Socket, "the socket parameter is empty.");
        }

        if (socketPath.IndexOf('\0', 1) >= 0)
        {
            throw Error(NbdUriComponent.Socket, "the socket path contains NUL after its first character.");
        }

        if (socketPath == "\0")
        {
            throw Error(NbdUriComponent.Socket, "the abstract socket name after the leading NUL is empty.");
        }

        CheckUnicode(NbdUriComponent.Socket, "the socket path", socketPath);
    }

    private static void CheckOptionalValue(string key, string? value)
    {
        if (value is null)
        {
            return;
        }

        if (value.Length == 0)
        {
            throw Error(NbdUriComponent.Tls, $"query parameter '{key}' is empty.");
        }

        if (value.Contains('\0', StringComparison.Ordinal))
        {
            throw Error(NbdUriComponent.Tls, $"query parameter '{key}' contains NUL.");
        }

        CheckUnicode(NbdUriComponent.Tls, $"query parameter '{key}'", value);
    }

    private static void CheckUnicode(NbdUriComponent component, string what, string value)
    {
        try
        {
            _ = StrictUtf8.GetByteCount(value);
        }
        catch (EncoderFallbackException)
        {
            throw Error(component, $"{what} is not valid Unicode (unpaired surrogate).");
        }
    }

    /// <summary>Validates a decoded host and returns it normalised (lower case).</summary>
    private static string CheckHost(string host, bool bracketed)
    {
        if (host.Length == 0)
        {
            throw Error(NbdUriComponent.Host, "a TCP NBD URI needs a host, as in nbd://localhost/export.");
        }

        if (bracketed)
        {
            if (host[0] is 'v' or 'V')
            {
                throw Error(NbdUriComponent.Host, $"IP literal '[{host}]' uses the IPvFuture form, which is not supported.");
            }

            var zone = host.IndexOf('%', StringComparison.Ordinal);
            var address = zone < 0 ? host : host[..zone];
            if (!IPAddress.TryParse(address, out var parsed) || parsed.AddressFamily != AddressFamily.InterNetworkV6)
            {
                throw Error(NbdUriComponent.Host, $"'[{host}]' is not a valid IPv6 address.");
            }

            if (zone >= 0)
            {
                var zoneId = host[(zone + 1)..];
                if (zoneId.Length == 0 || zoneId.Any(c => !IsUnreserved(c)))
                {
                    throw Error(NbdUriComponent.Host, $"the IPv6 zone identifier in '[{host}]' is empty or has characters other than letters, digits, '-', '.', '_' and '~'.");
                }

                // Zone identifiers name interfaces, which are case-sensitive: only the address is normalised.
                return string.Concat(address.ToLowerInvariant(), "%", zoneId);
            }

            return host.ToLowerInvariant();
        }

        foreach (var c in host)
        {
            if (char.IsControl(c) || c is ' ' or ':' or '/' or '?' or '#' or '[' or ']' or '@' or '%')
            {
                throw Error(NbdUriComponent.Host, $"host '{host}' contains '{Printable(c)}', which a host name may not.");
            }
        }

        CheckUnicode(NbdUriComponent.Host, $"host '{host}'", host);
        return host.ToLowerInvariant();
    }

    private static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c)
        ? "U+" + ((int)c).ToString("X4", CultureInfo.InvariantCulture)
        : c.ToString();

    private static bool IsUnreserved(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~';

    private static bool IsSubDelim(char c) => c is '!' or '$' or '&' or '\'' or '(' or ')' or '*' or '+' or ',' or ';' or '=';

    private enum CharClass
    {
        Unreserved = 0,
        UserInfo = 1,
        RegName = 2,
        Path = 3,
        Query = 4,
        QueryValue = 5,
    }

    /// <summary>Whether RFC 3986 allows <paramref name="c"/> unencoded in a component (parse side).</summary>
    private static bool IsAllowed(char c, CharClass charClass) => charClass switch
    {
        CharClass.Unreserved => IsUnreserved(c),
        CharClass.UserInfo => IsUnreserved(c) || IsSubDelim(c) || c == ':',
        CharClass.RegName => IsUnreserved(c) || IsSubDelim(c),
        CharClass.Path => IsUnreserved(c) || IsSubDelim(c) || c is ':' or '@' or '/',
        _ => IsUnreserved(c) || IsSubDelim(c) || c is ':' or '@' or '/' or '?',
    };

    /// <summary>Whether <paramref name="c"/> is written unencoded in a component (format side).</summary>
    private static bool IsLiteral(char c, CharClass charClass) => charClass switch
    {
        // '&', '=' and '+' separate or (in form encoding) mean something in a query: always encode them there.
        CharClass.QueryValue => IsUnreserved(c) || c is '!' or '$' or '\'' or '(' or ')' or '*' or ',' or ';' or ':' or '@' or '/',
        CharClass.UserInfo => IsUnreserved(c) || (IsSubDelim(c) && c != ':'),
        _ => IsAllowed(c, charClass),
    };

    private static void PercentEncode(StringBuilder builder, string value, CharClass charClass)
    {
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c < 0x80 && IsLiteral(c, charClass))
            {
                builder.Append(c);
                continue;
            }

            int count;
            if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                count = new Rune(c, value[i + 1]).EncodeToUtf8(utf8);
                i++;
            }
            else
            {
                count = new Rune(c).EncodeToUtf8(utf8);
            }

            foreach (var b in utf8[..count])
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }
    }

    /// <summary>The parse side, kept apart from the instance members.</summary>
    private static class Parser
    {
        public static NbdUri Parse(string uri)
        {
            if (uri.Length == 0)
            {
                throw Error(NbdUriComponent.Uri, "the URI is empty.");
            }

            var colon = uri.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw Error(NbdUriComponent.Scheme, "no scheme; an NBD URI starts with nbd://, nbds://, nbd+unix:// or nbds+unix://.");
            }

            var (transport, tlsRequired) = ParseScheme(uri[..colon]);
            var rest = uri.AsSpan(colon + 1);
            if (!rest.StartsWith("//", StringComparison.Ordinal))
            {
                throw Error(NbdUriComponent.Authority, $"'//' must follow '{uri[..colon]}:' (as in nbd://host/export or nbd+unix:///export?socket=PATH).");
            }

            rest = rest[2..];
            var hash = rest.IndexOf('#');
            if (hash >= 0)
            {
                throw Error(NbdUriComponent.Fragment, $"NBD URIs have no fragment, but this one ends with '{rest[hash..]}'.");
            }

            ReadOnlySpan<char> query = default;
            var hasQuery = false;
            var question = rest.IndexOf('?');
            if (question >= 0)
            {
                query = rest[(question + 1)..];
                hasQuery = true;
                rest = rest[..question];
            }

            var slash = rest.IndexOf('/');
            var authority = slash >= 0 ? rest[..slash] : rest;
            var path = slash >= 0 ? rest[slash..] : [];

            var (userName, host, port) = ParseAuthority(transport, authority);

            var exportName = path.Length == 0 ? string.Empty : Decode(path[1..], CharClass.Path, NbdUriComponent.ExportName, "export name");
            CheckExportName(exportName);

            var parameters = hasQuery ? ParseQuery(query) : [];
            string? socketPath = null;
            NbdTlsType? tlsType = null;
            string? tlsHostname = null;
            var tlsVerifyPeer = true;
            string? tlsCertificates = null;
            string? tlsPskFile = null;
            string? tlsUsername = null;
            var experimental = new List<KeyValuePair<string, string>>();
            foreach (var (key, value) in parameters)
            {
                switch (key)
                {
                    case SocketKey:
                        if (transport != NbdTransport.Unix)
                        {
                            throw Error(NbdUriComponent.Socket, "the socket parameter is only valid with nbd+unix:// and nbds+unix:// URIs.");
                        }

                        CheckSocketPath(value);
                        socketPath = value;
                        break;
                    case TlsTypeKey:
                        tlsType = value switch
                        {
                            "x509" => NbdTlsType.X509,
                            "anon" => NbdTlsType.Anonymous,
                            "psk" => NbdTlsType.Psk,
                            _ => throw Error(NbdUriComponent.Tls, $"tls-type '{value}' is not one of x509, anon, psk."),
                        };
                        break;
                    case TlsVerifyPeerKey:
                        tlsVerifyPeer = value switch
                        {
                            "1" => true,
                            "0" => false,
                            _ => throw Error(NbdUriComponent.Tls, $"tls-verify-peer '{value}' must be 0 or 1."),
                        };
                        break;
                    case TlsHostnameKey:
                        CheckOptionalValue(key, value);
                        tlsHostname = value;
                        break;
                    case TlsCertificatesKey:
                        CheckOptionalValue(key, value);
                        tlsCertificates = value;
                        break;
                    case TlsPskFileKey:
                        CheckOptionalValue(key, value);
                        tlsPskFile = value;
                        break;
                    case TlsUsernameKey:
                        CheckOptionalValue(key, value);
                        tlsUsername = value;
                        break;
                    default:
                        if (!key.StartsWith(ExperimentalPrefix, StringComparison.Ordinal))
                        {
                            throw Error(NbdUriComponent.Query, $"unknown query parameter '{key}' (known: {KnownParameters}; experimental ones start with 'x-').");
                        }

                        if (value.Contains('\0', StringComparison.Ordinal))
                        {
                            throw Error(NbdUriComponent.Query, $"query parameter '{key}' contains NUL.");
                        }

                        experimental.Add(new(key, value));
                        break;
                }
            }

            if (transport == NbdTransport.Unix && socketPath is null)
            {
                throw Error(NbdUriComponent.Socket, "a +unix NBD URI needs a socket parameter, as in nbd+unix:///export?socket=/run/nbd.sock.");
            }

            return new NbdUri(transport, tlsRequired, userName, host, port, socketPath, exportName, tlsType, tlsHostname,
                tlsVerifyPeer, tlsCertificates, tlsPskFile, tlsUsername, experimental);
        }

        private static (NbdTransport Transport, bool TlsRequired) ParseScheme(string scheme)
        {
            if (!char.IsAsciiLetter(scheme[0]) || scheme.Any(c => !char.IsAsciiLetterOrDigit(c) && c is not '+' and not '-' and not '.'))
            {
                throw Error(NbdUriComponent.Scheme, $"'{scheme}' is not a URI scheme.");
            }

            return scheme.ToLowerInvariant() switch
            {
                "nbd" => (NbdTransport.Tcp, false),
                "nbds" => (NbdTransport.Tcp, true),
                "nbd+unix" => (NbdTransport.Unix, false),
                "nbds+unix" => (NbdTransport.Unix, true),
                "nbd+vsock" or "nbds+vsock" => throw Error(NbdUriComponent.Scheme, $"scheme '{scheme}' (AF_VSOCK) is not supported; use nbd, nbds, nbd+unix or nbds+unix."),
                _ => throw Error(NbdUriComponent.Scheme, $"scheme '{scheme}' is not an NBD scheme; expected nbd, nbds, nbd+unix or nbds+unix."),
            };
        }

        private static (string? UserName, string? Host, int Port) ParseAuthority(NbdTransport transport, ReadOnlySpan<char> authority)
        {
            string? userName = null;
            var at = authority.IndexOf('@');
            if (at >= 0)
            {
                var userInfo = authority[..at];
                if (userInfo.Contains(':'))
                {
                    // Never echo the text: it is a password.
                    throw Error(NbdUriComponent.UserInfo, "the userinfo holds a password (user:password); NBD URIs take a user name only.");
                }

                userName = Decode(userInfo, CharClass.UserInfo, NbdUriComponent.UserInfo, "user name");
                if (userName.Length == 0 || userName.Contains('\0', StringComparison.Ordinal))
                {
                    throw Error(NbdUriComponent.UserInfo, "the user name before '@' is empty or contains NUL.");
                }

                authority = authority[(at + 1)..];
            }

            string host;
            ReadOnlySpan<char> portText = default;
            var hasPort = false;
            var bracketed = false;
            if (authority.StartsWith('['))
            {
                var close = authority.IndexOf(']');
                if (close < 0)
                {
                    throw Error(NbdUriComponent.Host, $"IP literal '{authority}' has no closing ']'.");
                }

                var literal = authority[1..close];
                var zone = literal.IndexOf("%25", StringComparison.Ordinal);
                if ((zone < 0 ? literal : literal[..zone]).Contains('%'))
                {
                    throw Error(NbdUriComponent.Host, $"IP literal '[{literal}]' has a '%' that is not '%25' (RFC 6874 writes a zone as [addr%25zone]).");
                }

                host = zone < 0
                    ? literal.ToString()
                    : string.Concat(literal[..zone], "%", Decode(literal[(zone + 3)..], CharClass.Unreserved, NbdUriComponent.Host, "IPv6 zone identifier"));
                bracketed = true;
                var after = authority[(close + 1)..];
                if (after.Length > 0)
                {
                    if (after[0] != ':')
                    {
                        throw Error(NbdUriComponent.Authority, $"'{after}' after the IP literal is neither empty nor ':port'.");
                    }

                    portText = after[1..];
                    hasPort = true;
                }
            }
            else
            {
                var colon = authority.IndexOf(':');
                var hostText = colon >= 0 ? authority[..colon] : authority;
                if (colon >= 0)
                {
                    portText = authority[(colon + 1)..];
                    hasPort = true;
                }

                host = Decode(hostText, CharClass.RegName, NbdUriComponent.Host, "host");
            }

            var port = DefaultPort;
            if (hasPort && portText.Length > 0)
            {
                foreach (var c in portText)
                {
                    if (!char.IsAsciiDigit(c))
                    {
                        throw Error(NbdUriComponent.Port, $"port '{portText}' is not a decimal number.");
                    }
                }

                if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out port))
                {
                    throw Error(NbdUriComponent.Port, $"port '{portText}' is out of range (1 to 65535).");
                }

                CheckPort(port);
            }

            if (transport == NbdTransport.Unix)
            {
                if (host.Length > 0 || hasPort)
                {
                    throw Error(NbdUriComponent.Authority, $"a +unix NBD URI takes no host or port (found '{authority}'); the server is named by ?socket=.");
                }

                return (userName, null, DefaultPort);
            }

            return (userName, CheckHost(host, bracketed), port);
        }

        private static List<KeyValuePair<string, string>> ParseQuery(ReadOnlySpan<char> query)
        {
            var parameters = new List<KeyValuePair<string, string>>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var range in query.Split('&'))
            {
                var segment = query[range];
                if (segment.Length == 0)
                {
                    // "?a=1&&b=2" or a trailing '&': an empty parameter, harmless.
                    continue;
                }

                var equals = segment.IndexOf('=');
                if (equals < 0)
                {
                    var name = Decode(segment, CharClass.Query, NbdUriComponent.Query, "query parameter name");
                    throw Error(NbdUriComponent.Query, $"query parameter '{name}' has no value (expected {name}=VALUE).");
                }

                var key = Decode(segment[..equals], CharClass.Query, NbdUriComponent.Query, "query parameter name");
                if (key.Length == 0)
                {
                    throw Error(NbdUriComponent.Query, $"query parameter '{segment}' has an empty name.");
                }

                var component = key == SocketKey ? NbdUriComponent.Socket : NbdUriComponent.Query;
                var value = Decode(segment[(equals + 1)..], CharClass.Query, component, $"value of query parameter '{key}'");
                if (!seen.Add(key))
                {
                    throw Error(NbdUriComponent.Query, $"query parameter '{key}' appears more than once.");
                }

                parameters.Add(new(key, value));
            }

            return parameters;
        }

        /// <summary>Checks the characters of a component and percent-decodes it as UTF-8.</summary>
        private static string Decode(ReadOnlySpan<char> text, CharClass charClass, NbdUriComponent component, string what)
        {
            if (text.IndexOf('%') < 0)
            {
                for (var i = 0; i < text.Length; i++)
                {
                    if (!IsAllowed(text[i], charClass))
                    {
                        throw InvalidCharacter(text, i, component, what);
                    }
                }

                return text.ToString();
            }

            var bytes = new byte[text.Length];
            var length = 0;
            for (var i = 0; i < text.Length; i++)
            {
                var c = text[i];
                if (c == '%')
                {
                    if (i + 2 >= text.Length || !char.IsAsciiHexDigit(text[i + 1]) || !char.IsAsciiHexDigit(text[i + 2]))
                    {
                        var end = Math.Min(text.Length, i + 3);
                        throw Error(component, $"'{text[i..end]}' in the {what} is not a valid percent-encoding (%XX with two hex digits).");
                    }

                    bytes[length++] = byte.Parse(text.Slice(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
                    i += 2;
                }
                else if (IsAllowed(c, charClass))
                {
                    bytes[length++] = (byte)c;
                }
                else
                {
                    throw InvalidCharacter(text, i, component, what);
                }
            }

            try
            {
                return StrictUtf8.GetString(bytes, 0, length);
            }
            catch (DecoderFallbackException)
            {
                throw Error(component, $"the {what} '{text}' does not decode to valid UTF-8.");
            }
        }

        private static NbdUriException InvalidCharacter(ReadOnlySpan<char> text, int index, NbdUriComponent component, string what)
        {
            var c = text[index];
            return Error(component,
                $"character '{Printable(c)}' at position {index.ToString(CultureInfo.InvariantCulture)} of the {what} '{text}' must be percent-encoded.");
        }
    }
}
