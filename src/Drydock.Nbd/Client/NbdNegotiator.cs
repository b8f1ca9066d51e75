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
/// wrapped in TLS after STARTTLS without losing bytes.
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

    public NbdNegotiator(Stream stream, string exportName, NbdClientOptions options, NbdTlsOptions? tls, string? defaultHostName)
    {
        _stream = stream;
        _exportName = exportName;
        _options = options;
        _tls = tls;
        _defaultHostName = defaultHostName;
    }

    /// <summary>Negotiates up to the transmission phase.</summary>
    public async Task<NbdNegotiation> NegotiateAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await NegotiateCoreAsync(cancellationToken);
        }
        catch
        {
            _ownedCertificate?.Dispose();
            throw;
        }
    }

    /// <summary>Asks about the export without entering transmission, then aborts politely.</summary>
    public async Task<NbdExportDescription> DescribeAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await DescribeCoreAsync(cancellationToken);
        }
        finally
        {
            _ownedCertificate?.Dispose();
        }
    }

    private async Task<NbdNegotiation> NegotiateCoreAsync(CancellationToken cancellationToken)
    {
        await StartAsync(cancellationToken);
        var contexts = new Dictionary<uint, string>();
        if (_structured && _options.MetaContexts.Count > 0)
        {
            contexts = await SetMetaContextsAsync(_options.MetaContexts, cancellationToken);
        }

        var export = await GoAsync(cancellationToken);
        export = export with { MetaContexts = [.. contexts.Values] };
        return new NbdNegotiation(_stream, export, contexts, _ownedCertificate);
    }

    private async Task<NbdExportDescription> DescribeCoreAsync(CancellationToken cancellationToken)
    {
        await StartAsync(cancellationToken);
        var exports = await ListExportsAsync(cancellationToken);
        IReadOnlyList<string> available = _structured ? await ListMetaContextsAsync(cancellationToken) : [];
        var export = await InfoAsync(NbdOption.Info, cancellationToken);
        await AbortAsync(cancellationToken);
        return new NbdExportDescription
        {
            Export = export,
            AvailableContexts = available,
            Exports = exports,
            HandshakeFlags = _handshakeFlags,
        };
    }

    private async Task StartAsync(CancellationToken cancellationToken)
    {
        var greeting = new byte[NbdSizes.ServerGreeting];
        await ReadExactlyAsync(greeting, "the server greeting", cancellationToken);
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
        await _stream.WriteAsync(flagBytes, cancellationToken);

        if (_tls is { Required: true })
        {
            await StartTlsAsync(cancellationToken);
        }

        if (_options.StructuredReplies)
        {
            await SendOptionAsync(NbdOption.StructuredReply, ReadOnlyMemory<byte>.Empty, cancellationToken);
            var (header, payload) = await ReadReplyAsync(NbdOption.StructuredReply, cancellationToken);
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

    private async Task StartTlsAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.StartTls, ReadOnlyMemory<byte>.Empty, cancellationToken);
        var (header, payload) = await ReadReplyAsync(NbdOption.StartTls, cancellationToken);
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
            await ssl.AuthenticateAsClientAsync(authentication, cancellationToken);
        }
        catch (AuthenticationException e)
        {
            await ssl.DisposeAsync();
            throw new NbdTlsException($"TLS handshake with the NBD server failed: {e.Message}", e);
        }
        catch (IOException e)
        {
            await ssl.DisposeAsync();
            throw new NbdTlsException($"TLS handshake with the NBD server failed: {e.Message}", e);
        }

        _stream = ssl;
        _tlsActive = true;
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

    private async Task<Dictionary<uint, string>> SetMetaContextsAsync(IList<string> wanted, CancellationToken cancellationToken)
    {
        var queries = wanted.Distinct(StringComparer.Ordinal).ToList();
        await SendOptionAsync(NbdOption.SetMetaContext, NbdHandshakeCodec.BuildMetaContextRequest(_exportName, queries), cancellationToken);
        var byId = new Dictionary<uint, string>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, NbdOption.SetMetaContext);
            var (header, payload) = await ReadReplyAsync(NbdOption.SetMetaContext, cancellationToken);
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

    private async Task<IReadOnlyList<string>> ListMetaContextsAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.ListMetaContext, NbdHandshakeCodec.BuildMetaContextRequest(_exportName, []), cancellationToken);
        var names = new List<string>();
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, NbdOption.ListMetaContext);
            var (header, payload) = await ReadReplyAsync(NbdOption.ListMetaContext, cancellationToken);
            switch (header.ReplyType)
            {
                case NbdOptionReplyType.MetaContext:
                    NbdHandshakeCodec.ParseMetaContext(payload, out var name);
                    names.Add(name);
                    break;
                case NbdOptionReplyType.Ack:
                    ExpectEmpty(header, payload);
                    return names;
                case NbdOptionReplyType.ErrUnsupported:
                case NbdOptionReplyType.ErrPolicy:
                    return [];
                default:
                    throw Refused(header, payload, "listing metadata contexts");
            }
        }
    }

    private async Task<IReadOnlyList<string>> ListExportsAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.List, ReadOnlyMemory<byte>.Empty, cancellationToken);
        var names = new List<string>();
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, NbdOption.List);
            var (header, payload) = await ReadReplyAsync(NbdOption.List, cancellationToken);
            switch (header.ReplyType)
            {
                case NbdOptionReplyType.Server:
                    names.Add(NbdHandshakeCodec.ParseServer(payload, out _));
                    break;
                case NbdOptionReplyType.Ack:
                    ExpectEmpty(header, payload);
                    return names;
                case NbdOptionReplyType.ErrUnsupported:
                case NbdOptionReplyType.ErrPolicy:
                    return [];
                default:
                    throw Refused(header, payload, "listing exports");
            }
        }
    }

    private async Task<NbdExportInfo> GoAsync(CancellationToken cancellationToken)
        => await InfoOrNullAsync(NbdOption.Go, cancellationToken)
           ?? await ExportNameAsync(cancellationToken); // an old server without NBD_OPT_GO

    private async Task<NbdExportInfo> InfoAsync(NbdOption option, CancellationToken cancellationToken)
        => await InfoOrNullAsync(option, cancellationToken)
           ?? throw new NbdOptionException(option, NbdOptionReplyType.ErrUnsupported, string.Empty, $"the server does not support {NbdNames.Option(option)}");

    // Null means the server answered NBD_REP_ERR_UNSUP to NBD_OPT_GO.
    private async Task<NbdExportInfo?> InfoOrNullAsync(NbdOption option, CancellationToken cancellationToken)
    {
        NbdInfoType[] requests = option == NbdOption.Go
            ? [NbdInfoType.BlockSize]
            : [NbdInfoType.BlockSize, NbdInfoType.Description];
        await SendOptionAsync(option, NbdHandshakeCodec.BuildExportInfoRequest(_exportName, requests), cancellationToken);
        ulong? size = null;
        var flags = NbdTransmissionFlags.None;
        NbdBlockSizes? sizes = null;
        string? description = null;
        for (var replies = 0; ; replies++)
        {
            CheckReplyCount(replies, option);
            var (header, payload) = await ReadReplyAsync(option, cancellationToken);
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

    private async Task<NbdExportInfo> ExportNameAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.ExportName, NbdStrings.Encode(_exportName, "export name"), cancellationToken);
        var noZeroes = (_handshakeFlags & NbdHandshakeFlags.NoZeroes) != 0;
        var reply = new byte[10 + (noZeroes ? 0 : NbdSizes.ExportNamePadding)];
        await ReadExactlyAsync(reply, $"the NBD_OPT_EXPORT_NAME reply for export '{_exportName}' (the server closes the connection when the export does not exist)", cancellationToken);
        NbdHandshakeCodec.TryReadExportNameReply(reply, noZeroes, out var size, out var flags);
        return BuildExport(size, flags, NbdBlockSizes.Default, null);
    }

    private async Task AbortAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.Abort, ReadOnlyMemory<byte>.Empty, cancellationToken);
        try
        {
            // The server should acknowledge; older servers just close. Either is fine.
            await ReadReplyAsync(NbdOption.Abort, cancellationToken);
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

    private async Task SendOptionAsync(NbdOption option, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        _send.ResetWrittenCount();
        NbdHandshakeCodec.WriteOption(_send, option, payload.Span);
        await _stream.WriteAsync(_send.WrittenMemory, cancellationToken);
        await _stream.FlushAsync(cancellationToken);
    }

    private async Task<(NbdOptionReplyHeader Header, byte[] Payload)> ReadReplyAsync(NbdOption option, CancellationToken cancellationToken)
    {
        await ReadExactlyAsync(_header, $"the reply to {NbdNames.Option(option)}", cancellationToken);
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
        await ReadExactlyAsync(payload, $"the reply to {NbdNames.Option(option)}", cancellationToken);
        return (header, payload);
    }

    private async Task ReadExactlyAsync(Memory<byte> buffer, string what, CancellationToken cancellationToken)
    {
        try
        {
            await _stream.ReadExactlyAsync(buffer, cancellationToken);
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
