using System.Buffers;
using System.Buffers.Binary;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Drydock.Nbd.Server;

/// <summary>
/// One client connection: the fixed-newstyle handshake (options until NBD_OPT_GO or NBD_OPT_EXPORT_NAME),
/// then transmission, where requests run concurrently and replies are written one at a time. States:
/// Greeting → Options → Transmission → Closed; any protocol violation by the client, or a hostile size,
/// closes the connection without touching others. Faults from the server's <see cref="NbdFaultPlan"/> are
/// injected at the points documented there.
/// </summary>
internal sealed partial class NbdServerConnection : IDisposable
{
    private const NbdClientFlags KnownClientFlags = NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes;

    private readonly INbdExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly NbdFaultPlan? _faults;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _abort;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly SemaphoreSlim _slots;
    private readonly AsyncByteBudget _budget;
    private Stream _stream;
    private bool _tls;
    private bool _noZeroes;
    private bool _structured;
    private bool _handshakeFaultUsed;
    private string? _contextsExport;
    private SelectedContext[] _contexts = [];
    private NbdExport? _export;

    public NbdServerConnection(INbdExportCatalog catalog, NbdServerOptions options, Stream stream, long id, string peer, CancellationToken stopping, CancellationToken cancellationToken)
    {
        _catalog = catalog;
        _options = options;
        _faults = _options.Faults;
        _logger = _options.LoggerFactory.CreateLogger<NbdServerConnection>();
        _stream = stream;
        _abort = CancellationTokenSource.CreateLinkedTokenSource(stopping, cancellationToken);
        _slots = new SemaphoreSlim(_options.MaxRequestsInFlight, _options.MaxRequestsInFlight);
        _budget = new AsyncByteBudget(_options.MaxBytesInFlight);
        Id = id;
        Peer = peer;
    }

    private enum OptionOutcome
    {
        Continue = 0,
        Close = 1,
        Transmission = 2,
    }

    public long Id { get; }

    public string Peer { get; }

    /// <summary>Runs the connection to its end. Never throws: every failure closes this connection only.</summary>
    public async Task RunAsync()
    {
        LogOpened(_logger, Id, Peer);
        var reason = "closed";
        try
        {
            var export = await HandshakeWithTimeoutAsync();
            if (export is not null)
            {
                LogTransmission(_logger, Id, export.Name, _tls, _structured, _contexts.Length);
                reason = await TransmitAsync(export);
            }
        }
        catch (NbdProtocolException e)
        {
            reason = e.Message;
            LogClientViolation(_logger, Id, e.Message);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            reason = _abort.IsCancellationRequested ? "closed by the server" : $"connection lost: {e.Message}";
        }
        catch (Exception e)
        {
            reason = e.Message;
            LogFailed(_logger, Id, e);
        }
        finally
        {
            Abort();
            await WaitForRequestsAsync();
            LogClosed(_logger, Id, reason);
        }
    }

    public void Dispose()
    {
        _stream.Dispose();
        _abort.Dispose();
        _writeLock.Dispose();
        _slots.Dispose();
    }

    /// <summary>Stops the connection: cancels its work and closes the stream (requests in flight end with it).</summary>
    private void Abort()
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }

        _stream.Dispose();
    }

    // ------------------------------------------------------------------------------------ handshake

    private async Task<NbdExport?> HandshakeWithTimeoutAsync()
    {
        using var timeout = _options.HandshakeTimeout == Timeout.InfiniteTimeSpan
            ? new CancellationTokenSource()
            : new CancellationTokenSource(_options.HandshakeTimeout, _options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_abort.Token, timeout.Token);
        try
        {
            return await HandshakeAsync(linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !_abort.IsCancellationRequested)
        {
            LogHandshakeTimeout(_logger, Id, _options.HandshakeTimeout.TotalSeconds);
            return null;
        }
    }

    private async Task<NbdExport?> HandshakeAsync(CancellationToken cancellationToken)
    {
        if (!await SendGreetingAsync(cancellationToken))
        {
            await DrainUntilEndAsync(cancellationToken);
            return null;
        }

        var flagBytes = new byte[NbdSizes.ClientFlags];
        await _stream.ReadExactlyAsync(flagBytes, cancellationToken);
        NbdHandshakeCodec.TryReadClientFlags(flagBytes, out var clientFlags);
        if ((clientFlags & ~KnownClientFlags) != 0)
        {
            throw new NbdProtocolException($"client flags 0x{(uint)clientFlags:x8} set bits the server did not offer");
        }

        var fixedNewstyle = (clientFlags & NbdClientFlags.FixedNewstyle) != 0;
        _noZeroes = (clientFlags & NbdClientFlags.NoZeroes) != 0;
        var header = new byte[NbdSizes.OptionHeader];
        for (var count = 1; ; count++)
        {
            await _stream.ReadExactlyAsync(header, cancellationToken);
            NbdHandshakeCodec.TryReadOptionHeader(header, out var option);
            if (count > _options.MaxOptions)
            {
                throw new NbdProtocolException($"client sent more than {_options.MaxOptions} options");
            }

            if (option.Length > (uint)_options.MaxOptionLength)
            {
                // Hostile or broken: the payload is neither read nor allocated.
                throw new NbdProtocolException($"client announced {NbdNames.Option(option.Option)} with {option.Length} bytes of data, over the cap of {_options.MaxOptionLength}");
            }

            if (!fixedNewstyle && option.Option != NbdOption.ExportName)
            {
                throw new NbdProtocolException($"client sent {NbdNames.Option(option.Option)} without negotiating the fixed newstyle handshake");
            }

            var length = (int)option.Length;
            var payload = length == 0 ? [] : ArrayPool<byte>.Shared.Rent(length);
            try
            {
                await _stream.ReadExactlyAsync(payload.AsMemory(0, length), cancellationToken);
                switch (await HandleOptionAsync(option.Option, payload.AsMemory(0, length), cancellationToken))
                {
                    case OptionOutcome.Close:
                        return null;
                    case OptionOutcome.Transmission:
                        return _export;
                    default:
                        break;
                }
            }
            finally
            {
                if (length > 0)
                {
                    ArrayPool<byte>.Shared.Return(payload);
                }
            }
        }
    }

    // False when a greeting fault ended the handshake.
    private async Task<bool> SendGreetingAsync(CancellationToken cancellationToken)
    {
        var fault = _faults?.Handshake ?? NbdHandshakeFault.None;
        var greeting = new byte[NbdSizes.ServerGreeting];
        NbdHandshakeCodec.WriteServerGreeting(greeting, fault == NbdHandshakeFault.NoFixedNewstyle
            ? NbdHandshakeFlags.NoZeroes
            : NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes);
        switch (fault)
        {
            case NbdHandshakeFault.WrongGreetingMagic:
                "NBDMAGIX"u8.CopyTo(greeting);
                break;
            case NbdHandshakeFault.Oldstyle:
                // NBDMAGIC, the oldstyle magic, 64-bit size, 32-bit flags, 124 zeroes.
                greeting = new byte[8 + 8 + 8 + 4 + NbdSizes.ExportNamePadding];
                BinaryPrimitives.WriteUInt64BigEndian(greeting, NbdMagic.InitPassword);
                BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), NbdMagic.OldStyle);
                BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(16), 1024 * 1024);
                BinaryPrimitives.WriteUInt32BigEndian(greeting.AsSpan(24), (uint)NbdTransmissionFlags.HasFlags);
                break;
            default:
                break;
        }

        await _stream.WriteAsync(greeting, cancellationToken);
        await _stream.FlushAsync(cancellationToken);
        if (fault is NbdHandshakeFault.WrongGreetingMagic or NbdHandshakeFault.NoFixedNewstyle or NbdHandshakeFault.Oldstyle)
        {
            LogHandshakeFault(_logger, Id, fault);
            return false;
        }

        return true;
    }

    private async Task<OptionOutcome> HandleOptionAsync(NbdOption option, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (_options.RequireTls && !_tls && option is not (NbdOption.StartTls or NbdOption.Abort))
        {
            if (option == NbdOption.ExportName)
            {
                // NBD_OPT_EXPORT_NAME cannot carry an error: the specification says to hang up.
                throw new NbdProtocolException("client sent NBD_OPT_EXPORT_NAME without TLS, which this server requires");
            }

            await ReplyErrorAsync(option, NbdOptionReplyType.ErrTlsRequired, "this server requires TLS: send NBD_OPT_STARTTLS first", cancellationToken);
            return OptionOutcome.Continue;
        }

        switch (option)
        {
            case NbdOption.ExportName:
                return await ExportNameAsync(payload, cancellationToken);
            case NbdOption.Abort:
                await ReplyAsync(option, NbdOptionReplyType.Ack, default, cancellationToken);
                return OptionOutcome.Close;
            case NbdOption.List:
                await ListAsync(payload, cancellationToken);
                return OptionOutcome.Continue;
            case NbdOption.StartTls:
                return await StartTlsAsync(payload, cancellationToken);
            case NbdOption.Info:
            case NbdOption.Go:
                return await ExportInfoAsync(option, payload, cancellationToken);
            case NbdOption.StructuredReply:
                await StructuredReplyAsync(payload, cancellationToken);
                return OptionOutcome.Continue;
            case NbdOption.ListMetaContext:
            case NbdOption.SetMetaContext:
                await MetaContextAsync(option, payload, cancellationToken);
                return OptionOutcome.Continue;
            default:
                await ReplyErrorAsync(option, NbdOptionReplyType.ErrUnsupported, $"{NbdNames.Option(option)} is not supported", cancellationToken);
                return OptionOutcome.Continue;
        }
    }

    private async Task<OptionOutcome> ExportNameAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var name = NbdStrings.Decode(payload.Span, "export name");
        var export = _catalog.FindExport(name)
                     ?? throw new NbdProtocolException($"client asked for export '{name}' with NBD_OPT_EXPORT_NAME, and there is none (hanging up, as the specification says)");
        Select(export, name);
        var reply = NbdHandshakeCodec.BuildExportNameReply(_faults?.ExportSize ?? export.Size, export.Flags, _noZeroes);
        await _stream.WriteAsync(reply, cancellationToken);
        await _stream.FlushAsync(cancellationToken);
        return OptionOutcome.Transmission;
    }

    private async Task ListAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (payload.Length != 0)
        {
            await ReplyErrorAsync(NbdOption.List, NbdOptionReplyType.ErrInvalid, "NBD_OPT_LIST carries no data", cancellationToken);
            return;
        }

        foreach (var export in _catalog.Exports)
        {
            await ReplyAsync(NbdOption.List, NbdOptionReplyType.Server, NbdHandshakeCodec.BuildServer(export.Name, export.Description), cancellationToken);
        }

        await ReplyAsync(NbdOption.List, NbdOptionReplyType.Ack, default, cancellationToken);
    }

    private async Task<OptionOutcome> StartTlsAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (_options.Certificate is null)
        {
            await ReplyErrorAsync(NbdOption.StartTls, NbdOptionReplyType.ErrPolicy, "TLS is not configured on this server", cancellationToken);
            return OptionOutcome.Continue;
        }

        if (_tls || payload.Length != 0)
        {
            await ReplyErrorAsync(NbdOption.StartTls, NbdOptionReplyType.ErrInvalid, _tls ? "TLS is already active" : "NBD_OPT_STARTTLS carries no data", cancellationToken);
            return OptionOutcome.Continue;
        }

        await ReplyAsync(NbdOption.StartTls, NbdOptionReplyType.Ack, default, cancellationToken);
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(TlsOptions(), cancellationToken);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            LogTlsFailed(_logger, Id, e.Message);
            await ssl.DisposeAsync();
            return OptionOutcome.Close;
        }

        // Nothing negotiated before STARTTLS survives it.
        _stream = ssl;
        _tls = true;
        _structured = false;
        _contexts = [];
        _contextsExport = null;
        return OptionOutcome.Continue;
    }

    private SslServerAuthenticationOptions TlsOptions()
    {
        var requireClient = _options.RequireClientCertificate;
        var authentication = new SslServerAuthenticationOptions
        {
            ServerCertificate = _options.Certificate,
            ClientCertificateRequired = requireClient,
            EnabledSslProtocols = SslProtocols.None, // the platform's current protocols (TLS 1.2 and 1.3)
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                certificate is null ? !requireClient : errors == SslPolicyErrors.None,
        };
        if (_options.TrustedClientRoots is { Count: > 0 } roots)
        {
            var policy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            policy.CustomTrustStore.AddRange(roots);
            authentication.CertificateChainPolicy = policy;
        }

        return authentication;
    }

    private async Task<OptionOutcome> ExportInfoAsync(NbdOption option, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        string name;
        NbdInfoType[] requests;
        try
        {
            name = NbdHandshakeCodec.ParseExportInfoRequest(payload.Span, out requests);
        }
        catch (NbdProtocolException e)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrInvalid, e.Message, cancellationToken);
            return OptionOutcome.Continue;
        }

        var export = _catalog.FindExport(name);
        if (export is null)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrUnknown, $"there is no export named '{name}'", cancellationToken);
            return OptionOutcome.Continue;
        }

        var fault = _faults?.Handshake ?? NbdHandshakeFault.None;
        if (fault == NbdHandshakeFault.OversizedOptionReply)
        {
            // A header that claims 1 GiB of NBD_REP_INFO; the payload never comes.
            var writer = new ArrayBufferWriter<byte>(NbdSizes.OptionReplyHeader);
            NbdHandshakeCodec.WriteOptionReply(writer, option, NbdOptionReplyType.Info, default);
            var header = writer.WrittenSpan.ToArray();
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(16), 1u << 30);
            await _stream.WriteAsync(header, cancellationToken);
            await _stream.FlushAsync(cancellationToken);
            LogHandshakeFault(_logger, Id, fault);
            await DrainUntilEndAsync(cancellationToken);
            return OptionOutcome.Close;
        }

        var info = NbdHandshakeCodec.BuildExportInfo(_faults?.ExportSize ?? export.Size, export.Flags);
        if (fault == NbdHandshakeFault.ExportInfoWrongLength)
        {
            info = info[..10];
            LogHandshakeFault(_logger, Id, fault);
        }

        await ReplyAsync(option, NbdOptionReplyType.Info, info, cancellationToken);
        if (requests.Contains(NbdInfoType.Name))
        {
            await ReplyAsync(option, NbdOptionReplyType.Info, NbdHandshakeCodec.BuildTextInfo(NbdInfoType.Name, export.Name), cancellationToken);
        }

        if (requests.Contains(NbdInfoType.Description) && export.Description is { } description)
        {
            await ReplyAsync(option, NbdOptionReplyType.Info, NbdHandshakeCodec.BuildTextInfo(NbdInfoType.Description, description), cancellationToken);
        }

        await ReplyAsync(option, NbdOptionReplyType.Info, NbdHandshakeCodec.BuildBlockSizeInfo(_faults?.BlockSizes ?? export.BlockSizes), cancellationToken);
        await ReplyAsync(option, NbdOptionReplyType.Ack, default, cancellationToken);
        if (option != NbdOption.Go)
        {
            return OptionOutcome.Continue;
        }

        Select(export, name);
        return OptionOutcome.Transmission;
    }

    private async Task StructuredReplyAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (payload.Length != 0)
        {
            await ReplyErrorAsync(NbdOption.StructuredReply, NbdOptionReplyType.ErrInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data", cancellationToken);
            return;
        }

        if (_faults?.Handshake == NbdHandshakeFault.RefuseStructuredReplies)
        {
            LogHandshakeFault(_logger, Id, NbdHandshakeFault.RefuseStructuredReplies);
            await ReplyErrorAsync(NbdOption.StructuredReply, NbdOptionReplyType.ErrUnsupported, "structured replies are not supported", cancellationToken);
            return;
        }

        _structured = true;
        await ReplyAsync(NbdOption.StructuredReply, NbdOptionReplyType.Ack, default, cancellationToken);
    }

    private async Task MetaContextAsync(NbdOption option, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var select = option == NbdOption.SetMetaContext;
        if (select)
        {
            // SET replaces the selection, even when it fails.
            _contexts = [];
            _contextsExport = null;
        }

        if (!_structured)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first", cancellationToken);
            return;
        }

        string name;
        string[] queries;
        try
        {
            name = NbdHandshakeCodec.ParseMetaContextRequest(payload.Span, out queries);
        }
        catch (NbdProtocolException e)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrInvalid, e.Message, cancellationToken);
            return;
        }

        if (queries.Length > _options.MaxMetaContextQueries)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrTooBig, $"{queries.Length} queries are more than the {_options.MaxMetaContextQueries} this server takes", cancellationToken);
            return;
        }

        var export = _catalog.FindExport(name);
        if (export is null)
        {
            await ReplyErrorAsync(option, NbdOptionReplyType.ErrUnknown, $"there is no export named '{name}'", cancellationToken);
            return;
        }

        var matches = new List<SelectedContext>();
        if (!select && queries.Length == 0)
        {
            AddContext(matches, NbdContexts.BaseAllocation, null);
            foreach (var bitmap in export.Bitmaps)
            {
                AddContext(matches, bitmap.ContextName, bitmap);
            }
        }

        foreach (var query in queries)
        {
            if (!query.Contains(':', StringComparison.Ordinal))
            {
                await ReplyErrorAsync(option, NbdOptionReplyType.ErrInvalid, $"query '{query}' does not start with a namespace and a colon", cancellationToken);
                return;
            }

            Resolve(export, query, select, matches);
        }

        if (select && _faults?.Handshake == NbdHandshakeFault.MissingMetaContext)
        {
            LogHandshakeFault(_logger, Id, NbdHandshakeFault.MissingMetaContext);
            matches.RemoveAll(match => match.Bitmap is not null);
        }

        if (select)
        {
            for (var i = 0; i < matches.Count; i++)
            {
                matches[i] = matches[i] with { Id = (uint)(i + 1) };
            }

            _contexts = [.. matches];
            _contextsExport = name;
        }

        foreach (var match in matches)
        {
            // LIST replies carry id 0: the id is reserved there.
            await ReplyAsync(option, NbdOptionReplyType.MetaContext, NbdHandshakeCodec.BuildMetaContext(match.Id, match.Name), cancellationToken);
        }

        await ReplyAsync(option, NbdOptionReplyType.Ack, default, cancellationToken);
    }

    // The query language: "base:allocation"; "qemu:dirty-bitmap:NAME"; and, for LIST only, the wildcards
    // "base:", "qemu:" and "qemu:dirty-bitmap:". Unknown namespaces and leaf names are ignored.
    private static void Resolve(NbdExport export, string query, bool select, List<SelectedContext> matches)
    {
        const string basePrefix = "base:";
        const string qemuPrefix = "qemu:";
        if (query == NbdContexts.BaseAllocation || (query == basePrefix && !select))
        {
            AddContext(matches, NbdContexts.BaseAllocation, null);
        }
        else if (query is qemuPrefix or NbdContexts.DirtyBitmapPrefix)
        {
            if (!select)
            {
                foreach (var bitmap in export.Bitmaps)
                {
                    AddContext(matches, bitmap.ContextName, bitmap);
                }
            }
        }
        else if (query.StartsWith(NbdContexts.DirtyBitmapPrefix, StringComparison.Ordinal)
                 && export.FindBitmap(query[NbdContexts.DirtyBitmapPrefix.Length..]) is { } bitmap)
        {
            AddContext(matches, bitmap.ContextName, bitmap);
        }
    }

    private static void AddContext(List<SelectedContext> matches, string name, NbdDirtyBitmap? bitmap)
    {
        if (!matches.Exists(match => match.Name == name))
        {
            matches.Add(new SelectedContext(0, name, bitmap));
        }
    }

    private void Select(NbdExport export, string name)
    {
        _export = export;
        if (_contextsExport != name)
        {
            // Contexts selected for another export do not apply to this one.
            _contexts = [];
        }
    }

    private Task ReplyErrorAsync(NbdOption option, NbdOptionReplyType type, string message, CancellationToken cancellationToken)
        => ReplyAsync(option, type, NbdStrings.Encode(Truncate(message), "error message"), cancellationToken);

    private async Task ReplyAsync(NbdOption option, NbdOptionReplyType type, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var answered = option;
        var times = 1;
        if (!_handshakeFaultUsed && _faults?.Handshake is { } fault)
        {
            if (fault == NbdHandshakeFault.ReplyToUnsentOption)
            {
                answered = option == NbdOption.ListMetaContext ? NbdOption.List : NbdOption.ListMetaContext;
                _handshakeFaultUsed = true;
                LogHandshakeFault(_logger, Id, fault);
            }
            else if (fault == NbdHandshakeFault.RepeatedReply && type == NbdOptionReplyType.Ack)
            {
                times = 2;
                _handshakeFaultUsed = true;
                LogHandshakeFault(_logger, Id, fault);
            }
        }

        var writer = new ArrayBufferWriter<byte>((NbdSizes.OptionReplyHeader + payload.Length) * times);
        for (var i = 0; i < times; i++)
        {
            NbdHandshakeCodec.WriteOptionReply(writer, answered, type, payload.Span);
        }

        await _stream.WriteAsync(writer.WrittenMemory, cancellationToken);
        await _stream.FlushAsync(cancellationToken);
    }

    // After a handshake fault: wait for the client to hang up (bounded by the handshake timeout).
    private async Task DrainUntilEndAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[512];
        while (await _stream.ReadAsync(buffer, cancellationToken) > 0)
        {
        }
    }

    private static string Truncate(string message) => message.Length <= 512 ? message : message[..512];

    /// <summary>A selected metadata context: its id on this connection, its name, and the bitmap it serves (null for base:allocation).</summary>
    private sealed record SelectedContext(uint Id, string Name, NbdDirtyBitmap? Bitmap);
}
