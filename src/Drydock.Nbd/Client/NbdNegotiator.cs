using System.Buffers;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Client;

/// <summary>The outcome of negotiating one connection.</summary>
internal sealed record NbdNegotiation(Stream Stream, NbdExportInfo Export, IReadOnlyDictionary<uint, string> ContextsById, IDisposable? OwnedCertificate);

/// <summary>
/// Drives the fixed-newstyle handshake of one connection over a stream, option by option, using
/// <see cref="NbdHandshakeCodec"/>. Reads never run ahead of the current reply, so the stream can be
/// wrapped in TLS after STARTTLS without losing bytes. IO is blocking on purpose: a socket that never
/// sees an asynchronous operation stays in blocking mode, which the connection's reader thread relies
/// on (see <see cref="NbdConnection"/>). Callers run it on a worker thread and abort it by disposing the stream.
/// </summary>
internal sealed class NbdNegotiator
{
    private readonly NbdClientOptions _options;
    private readonly string _exportName;
    private readonly NbdTlsOptions? _tls;
    private readonly string? _defaultHostName;
    private readonly ArrayBufferWriter<byte> _send = new(256);
    private readonly byte[] _header = new byte[NbdSizes.OptionReplyHeader];
    private Stream _stream;
    private NbdHandshakeFlags _handshakeFlags;
    private bool _tlsActive;
    private bool _structured;
    private X509Certificate2? _ownedCertificate;
    private bool _firstExchangeAfterTls;

    public NbdNegotiator(Stream stream, string exportName, NbdClientOptions options, NbdTlsOptions? tls, string? defaultHostName)
    {
        _stream = stream;
        _exportName = exportName;
        _options = options;
        _tls = tls;
        _defaultHostName = defaultHostName;
    }

    /// <summary>Negotiates up to the transmission phase.</summary>
    public NbdNegotiation Negotiate()
    {
        try
        {
            return NegotiateCore();
        }
        catch
        {
            _ownedCertificate?.Dispose();
            throw;
        }
    }

    /// <summary>Asks about the export without entering transmission, then aborts politely.</summary>
    public NbdExportDescription Describe()
    {
        try
        {
            return DescribeCore();
        }
        finally
        {
            _ownedCertificate?.Dispose();
        }
    }

    private NbdNegotiation NegotiateCore()
    {
        Start();
        var contexts = new Dictionary<uint, string>();
        if (_structured && _options.MetaContexts.Count > 0)
        {
            contexts = SetMetaContexts(_options.MetaContexts);
        }

        var export = Go();
        export = export with { MetaContexts = [.. contexts.Values] };
        return new NbdNegotiation(_stream, export, contexts, _ownedCertificate);
    }

    private NbdExportDescription DescribeCore()
    {
        Start();
        var exports = ListExports();
        IReadOnlyList<string> available = _structured ? ListMetaContexts() : [];
        var export = Info(NbdOption.Info);
        Abort();
        return new NbdExportDescription
        {
            Export = export,
            AvailableContexts = available,
            Exports = exports,
            HandshakeFlags = _handshakeFlags,
        };
    }

    private void Start()
    {
        var greeting = new byte[NbdSizes.ServerGreeting];
        ReadExactly(greeting, "the server greeting");
        if (!NbdHandshakeCodec.TryReadServerGreeting(greeting, out _handshakeFlags))
        {
            throw new NbdProtocolException("short server greeting");
        }

        var clientFlags = NbdClientFlags.FixedNewstyle;
        if ((_handshakeFlags & NbdHandshakeFlags.NoZeroes) != 0)
        {
            clientFlags |= NbdClientFlags.NoZeroes;
        }

        var flagBytes = new byte[NbdSizes.ClientFlags];
        NbdHandshakeCodec.WriteClientFlags(flagBytes, clientFlags);
        _stream.Write(flagBytes);

        if (_tls is { Required: true })
        {
            StartTls();
        }

        if (_options.StructuredReplies)
        {
            SendOption(NbdOption.StructuredReply, ReadOnlySpan<byte>.Empty);
            var (header, payload) = ReadReply(NbdOption.StructuredReply);
            if (header.ReplyType == NbdOptionReplyType.Ack)
            {
                ExpectEmpty(header, payload);
                _structured = true;
            }
            else if (header.ReplyType != NbdOptionReplyType.ErrUnsupported)
            {
                throw Refused(header, payload, "structured replies");
            }
        }
    }

    private void StartTls()
    {
        SendOption(NbdOption.StartTls, ReadOnlySpan<byte>.Empty);
        var (header, payload) = ReadReply(NbdOption.StartTls);
        if (header.ReplyType != NbdOptionReplyType.Ack)
        {
            var message = NbdStrings.DecodeMessage(payload);
            throw new NbdTlsException(
                $"TLS is required but the server refused STARTTLS with {NbdNames.OptionReply(header.ReplyType)}"
                + (message.Length > 0 ? $" ({message})" : string.Empty) + "; nothing was sent in plaintext");
        }

        ExpectEmpty(header, payload);
        var tls = _tls!;
        var hostName = tls.HostName ?? _defaultHostName;
        var trusted = new X509Certificate2Collection();
        var clientCertificate = tls.ClientCertificate;
        if (tls.CertificatesDirectory is { } directory)
        {
            // The certificate loaded here lives as long as the connection's TLS session.
            if (clientCertificate is null)
            {
                _ownedCertificate = LoadCertificates(directory, trusted);
                clientCertificate = _ownedCertificate;
            }
        }

        if (tls.TrustedRoots is { } roots)
        {
            trusted.AddRange(roots);
        }

        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        var authentication = new SslClientAuthenticationOptions
        {
            TargetHost = hostName ?? "localhost",
            EnabledSslProtocols = SslProtocols.None, // the platform's current protocols (TLS 1.2 and 1.3 here)
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, _, _, errors) =>
            {
                if (!tls.VerifyPeer)
                {
                    return true;
                }

                // Over a Unix socket with no name given there is no name to check; the chain still is.
                if (hostName is null)
                {
                    errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch;
                }

                return errors == SslPolicyErrors.None;
            },
        };
        if (trusted.Count > 0)
        {
            var policy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            policy.CustomTrustStore.AddRange(trusted);
            authentication.CertificateChainPolicy = policy;
        }

        if (clientCertificate is not null)
        {
            authentication.ClientCertificates = [clientCertificate];
        }

        try
        {
            ssl.AuthenticateAsClient(authentication);
        }
        catch (AuthenticationException e)
        {
            ssl.Dispose();
            throw new NbdTlsException($"TLS handshake with the NBD server failed: {e.Message}", e);
        }
        catch (IOException e)
        {
            ssl.Dispose();
            throw new NbdTlsException($"TLS handshake with the NBD server failed: {e.Message}", e);
        }

        _stream = ssl;
        _tlsActive = true;
        _firstExchangeAfterTls = true;
    }

    private static X509Certificate2? LoadCertificates(string directory, X509Certificate2Collection trusted)
    {
        var ca = Path.Combine(directory, "ca-cert.pem");
        if (!File.Exists(ca))
        {
            throw new NbdTlsException($"TLS certificates directory {directory} has no ca-cert.pem");
        }

        trusted.ImportFromPemFile(ca);
        var certificate = Path.Combine(directory, "client-cert.pem");
        var key = Path.Combine(directory, "client-key.pem");
        return File.Exists(certificate) && File.Exists(key) ? X509Certificate2.CreateFromPemFile(certificate, key) : null;
    }

    private Dictionary<uint, string> SetMetaContexts(IList<string> wanted)
    {
        var queries = wanted.Distinct(StringComparer.Ordinal).ToList();
        SendOption(NbdOption.SetMetaContext, NbdHandshakeCodec.BuildMetaContextRequest(_exportName, queries));
        var byId = new Dictionary<uint, string>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, NbdOption.SetMetaContext);
            var (header, payload) = ReadReply(NbdOption.SetMetaContext);
            switch (header.ReplyType)
            {
                case NbdOptionReplyType.MetaContext:
                    var id = NbdHandshakeCodec.ParseMetaContext(payload, out var name);
                    if (!queries.Contains(name, StringComparer.Ordinal))
                    {
                        throw new NbdProtocolException($"server selected meta context '{name}', which was not asked for");
                    }

                    if (!names.Add(name) || !byId.TryAdd(id, name))
                    {
                        throw new NbdProtocolException($"server repeated meta context '{name}' (id {id})");
                    }

                    break;
                case NbdOptionReplyType.Ack:
                    ExpectEmpty(header, payload);
                    return byId;
                case NbdOptionReplyType.ErrUnsupported:
                    return [];
                default:
                    throw Refused(header, payload, "metadata contexts");
            }
        }
    }

    private IReadOnlyList<string> ListMetaContexts()
    {
        SendOption(NbdOption.ListMetaContext, NbdHandshakeCodec.BuildMetaContextRequest(_exportName, []));
        return ReadList(NbdOption.ListMetaContext, NbdOptionReplyType.MetaContext, payload =>
        {
            NbdHandshakeCodec.ParseMetaContext(payload, out var name);
            return name;
        });
    }

    private IReadOnlyList<string> ListExports()
    {
        SendOption(NbdOption.List, ReadOnlySpan<byte>.Empty);
        return ReadList(NbdOption.List, NbdOptionReplyType.Server, payload => NbdHandshakeCodec.ParseServer(payload, out _));
    }

    /// <summary>Reads the items of a listing option up to its ACK; a server that refuses to list gives an empty list.</summary>
    private List<string> ReadList(NbdOption option, NbdOptionReplyType itemType, Func<byte[], string> parseItem)
    {
        var items = new List<string>();
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, option);
            var (header, payload) = ReadReply(option);
            if (header.ReplyType == itemType)
            {
                items.Add(parseItem(payload));
                continue;
            }

            switch (header.ReplyType)
            {
                case NbdOptionReplyType.Ack:
                    ExpectEmpty(header, payload);
                    return items;
                case NbdOptionReplyType.ErrUnsupported:
                case NbdOptionReplyType.ErrPolicy:
                    return [];
                default:
                    throw Refused(header, payload, $"listing with {NbdNames.Option(option)}");
            }
        }
    }

    private NbdExportInfo Go()
        => InfoOrNull(NbdOption.Go)
           ?? ExportName(); // an old server without NBD_OPT_GO

    private NbdExportInfo Info(NbdOption option)
        => InfoOrNull(option)
           ?? throw new NbdOptionException(option, NbdOptionReplyType.ErrUnsupported, string.Empty, $"the server does not support {NbdNames.Option(option)}");

    // Null means the server answered NBD_REP_ERR_UNSUP to NBD_OPT_GO.
    private NbdExportInfo? InfoOrNull(NbdOption option)
    {
        NbdInfoType[] requests = option == NbdOption.Go
            ? [NbdInfoType.BlockSize]
            : [NbdInfoType.BlockSize, NbdInfoType.Description];
        SendOption(option, NbdHandshakeCodec.BuildExportInfoRequest(_exportName, requests));
        ulong? size = null;
        var flags = NbdTransmissionFlags.None;
        NbdBlockSizes? sizes = null;
        string? description = null;
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, option);
            var (header, payload) = ReadReply(option);
            switch (header.ReplyType)
            {
                case NbdOptionReplyType.Info:
                    var info = NbdHandshakeCodec.ParseInfo(payload);
                    switch (info.Type)
                    {
                        case NbdInfoType.Export:
                            if (size is not null)
                            {
                                throw new NbdProtocolException("server sent NBD_INFO_EXPORT twice");
                            }

                            size = info.ExportSize;
                            flags = info.Flags;
                            break;
                        case NbdInfoType.BlockSize:
                            if (sizes is not null)
                            {
                                throw new NbdProtocolException("server sent NBD_INFO_BLOCK_SIZE twice");
                            }

                            info.BlockSizes.Validate();
                            sizes = info.BlockSizes;
                            break;
                        case NbdInfoType.Description:
                            description = info.Text;
                            break;
                        default:
                            break; // Unknown or unrequested information types are ignored, as the specification says.
                    }

                    break;
                case NbdOptionReplyType.Ack:
                    ExpectEmpty(header, payload);
                    if (size is null)
                    {
                        throw new NbdProtocolException($"server acknowledged {NbdNames.Option(option)} without sending NBD_INFO_EXPORT");
                    }

                    return BuildExport(size.Value, flags, sizes ?? NbdBlockSizes.Default, description);
                case NbdOptionReplyType.ErrUnsupported when option == NbdOption.Go:
                    return null;
                default:
                    throw Refused(header, payload, $"export '{_exportName}'");
            }
        }
    }

    private NbdExportInfo ExportName()
    {
        SendOption(NbdOption.ExportName, NbdStrings.Encode(_exportName, "export name"));
        var noZeroes = (_handshakeFlags & NbdHandshakeFlags.NoZeroes) != 0;
        var reply = new byte[10 + (noZeroes ? 0 : NbdSizes.ExportNamePadding)];
        ReadExactly(reply, $"the NBD_OPT_EXPORT_NAME reply for export '{_exportName}' (the server closes the connection when the export does not exist)");
        NbdHandshakeCodec.TryReadExportNameReply(reply, noZeroes, out var size, out var flags);
        return BuildExport(size, flags, NbdBlockSizes.Default, null);
    }

    private void Abort()
    {
        SendOption(NbdOption.Abort, ReadOnlySpan<byte>.Empty);
        try
        {
            // The server should acknowledge; older servers just close. Either is fine.
            ReadReply(NbdOption.Abort);
        }
        catch (NbdException)
        {
        }
    }

    private NbdExportInfo BuildExport(ulong size, NbdTransmissionFlags flags, NbdBlockSizes sizes, string? description)
    {
        if ((flags & NbdTransmissionFlags.HasFlags) == 0)
        {
            throw new NbdProtocolException($"transmission flags 0x{(ushort)flags:x4} lack NBD_FLAG_HAS_FLAGS");
        }

        if (size == 0)
        {
            throw new NbdProtocolException($"export '{_exportName}' has size 0");
        }

        if (size > long.MaxValue)
        {
            throw new NbdProtocolException($"export '{_exportName}' reports an absurd size of {size} bytes");
        }

        if (_options.ExpectedSize is { } expected && expected != size)
        {
            throw new NbdProtocolException($"export '{_exportName}' is {size} bytes but {expected} were expected (the disk's size as its hypervisor reports it)");
        }

        if (sizes.Minimum > 1 && size % sizes.Minimum != 0)
        {
            throw new NbdProtocolException($"export size {size} is not a multiple of the minimum block size {sizes.Minimum}");
        }

        return new NbdExportInfo
        {
            Name = _exportName,
            Description = description,
            Size = size,
            Flags = flags,
            BlockSizes = sizes,
            StructuredReplies = _structured,
            Tls = _tlsActive,
            MetaContexts = [],
        };
    }

    private void SendOption(NbdOption option, ReadOnlySpan<byte> payload)
    {
        _send.ResetWrittenCount();
        NbdHandshakeCodec.WriteOption(_send, option, payload);
        try
        {
            _stream.Write(_send.WrittenSpan);
            _stream.Flush();
        }
        catch (IOException e) when (_firstExchangeAfterTls)
        {
            throw RefusedAfterTls(e);
        }
    }

    private (NbdOptionReplyHeader Header, byte[] Payload) ReadReply(NbdOption option)
    {
        try
        {
            var reply = ReadReplyCore(option);
            _firstExchangeAfterTls = false;
            return reply;
        }
        catch (Exception e) when (_firstExchangeAfterTls && e is NbdConnectionException or IOException)
        {
            throw RefusedAfterTls(e);
        }
    }

    /// <summary>
    /// With TLS 1.3 the client completes its side of the handshake before the server has checked the client
    /// certificate, so a refusal shows up as the connection breaking at the first exchange after STARTTLS.
    /// </summary>
    private static NbdTlsException RefusedAfterTls(Exception e)
        => new($"the server closed the connection right after the TLS handshake; it probably refused the client certificate ({e.Message})", e);

    private (NbdOptionReplyHeader Header, byte[] Payload) ReadReplyCore(NbdOption option)
    {
        ReadExactly(_header, $"the reply to {NbdNames.Option(option)}");
        NbdHandshakeCodec.TryReadOptionReplyHeader(_header, out var header);
        if (header.Option != option)
        {
            throw new NbdProtocolException($"server answered {NbdNames.Option(header.Option)}, an option that was not sent (expected a reply to {NbdNames.Option(option)})");
        }

        if (header.Length > (uint)_options.MaxOptionReplyLength)
        {
            throw new NbdProtocolException($"reply to {NbdNames.Option(option)} claims {header.Length} bytes, over the cap of {_options.MaxOptionReplyLength}");
        }

        if (header.ReplyType == NbdOptionReplyType.Ack && header.Length != 0)
        {
            throw new NbdProtocolException($"NBD_REP_ACK to {NbdNames.Option(option)} carries {header.Length} bytes");
        }

        var payload = header.Length == 0 ? [] : new byte[header.Length];
        ReadExactly(payload, $"the reply to {NbdNames.Option(option)}");
        return (header, payload);
    }

    private void ReadExactly(Span<byte> buffer, string what)
    {
        try
        {
            _stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException e)
        {
            throw new NbdConnectionException($"server closed the connection while sending {what}", e);
        }
        catch (IOException e)
        {
            throw new NbdConnectionException($"connection failed while reading {what}: {e.Message}", e);
        }
    }

    private void CheckReplyCount(int replies, NbdOption option)
    {
        if (replies >= _options.MaxOptionReplies)
        {
            throw new NbdProtocolException($"server sent more than {_options.MaxOptionReplies} replies to {NbdNames.Option(option)}");
        }
    }

    private static void ExpectEmpty(NbdOptionReplyHeader header, byte[] payload)
    {
        if (payload.Length != 0)
        {
            throw new NbdProtocolException($"{NbdNames.OptionReply(header.ReplyType)} to {NbdNames.Option(header.Option)} carries {payload.Length} unexpected bytes");
        }
    }

    private NbdException Refused(NbdOptionReplyHeader header, byte[] payload, string what)
    {
        if (!header.IsError)
        {
            return new NbdProtocolException($"unexpected {NbdNames.OptionReply(header.ReplyType)} in reply to {NbdNames.Option(header.Option)}");
        }

        var message = NbdStrings.DecodeMessage(payload);
        var suffix = message.Length > 0 ? $": {message}" : string.Empty;
        return header.ReplyType switch
        {
            NbdOptionReplyType.ErrTlsRequired => new NbdTlsException($"the server requires TLS for {what} (use an nbds:// or nbds+unix:// URI with certificates){suffix}"),
            NbdOptionReplyType.ErrUnknown => new NbdOptionException(header.Option, header.ReplyType, message, $"export '{_exportName}' does not exist on the server{suffix}"),
            _ => new NbdOptionException(header.Option, header.ReplyType, message, $"server refused {what} with {NbdNames.OptionReply(header.ReplyType)}{suffix}"),
        };
    }
}
