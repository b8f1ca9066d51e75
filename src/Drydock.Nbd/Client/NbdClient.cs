using System.Net.Sockets;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Client;

/// <summary>Opens the byte stream of one connection (a socket, or a test stream).</summary>
/// <param name="cancellationToken">Cancels connecting.</param>
/// <returns>A connected stream; the client owns and disposes it.</returns>
public delegate ValueTask<Stream> NbdStreamFactory(CancellationToken cancellationToken);

/// <summary>Options of WRITE_ZEROES.</summary>
[Flags]
public enum NbdZeroOptions
{
    /// <summary>The server may punch a hole.</summary>
    None = 0,

    /// <summary>NBD_CMD_FLAG_NO_HOLE: keep the range allocated.</summary>
    NoHole = 1,

    /// <summary>NBD_CMD_FLAG_FAST_ZERO: fail with ENOTSUP unless zeroing is faster than writing.</summary>
    Fast = 2,

    /// <summary>NBD_CMD_FLAG_FUA: persist before replying.</summary>
    Fua = 4,
}

/// <summary>
/// An NBD client for one export: one connection, or several when the server advertises
/// NBD_FLAG_CAN_MULTI_CONN. Requests are pipelined; sizes are clamped to the server's limits and
/// larger calls are split. Safe for concurrent use.
/// </summary>
public sealed class NbdClient : IAsyncDisposable
{
    private readonly NbdConnection[] _connections;
    private int _next;

    private NbdClient(NbdConnection[] connections)
    {
        _connections = connections;
        Export = connections[0].Export with { Connections = connections.Length };
    }

    /// <summary>What negotiation established about the export.</summary>
    public NbdExportInfo Export { get; }

    /// <summary>Connects to the export a URI names.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <param name="options">Client settings; TLS settings default to the URI's.</param>
    /// <param name="cancellationToken">Cancels connecting.</param>
    /// <returns>A connected client.</returns>
    public static Task<NbdClient> ConnectAsync(NbdUri uri, NbdClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new NbdClientOptions();
        var tls = options.Tls ?? NbdSocketConnector.TlsFromUri(uri);
        return ConnectAsync(NbdSocketConnector.Create(uri), uri.ExportName, options, tls, NbdSocketConnector.HostNameFor(uri, tls), cancellationToken);
    }

    /// <summary>Connects over streams from a factory (sockets, or in-memory streams in tests).</summary>
    /// <param name="connect">Opens one connection's stream.</param>
    /// <param name="exportName">The export name.</param>
    /// <param name="options">Client settings.</param>
    /// <param name="cancellationToken">Cancels connecting.</param>
    /// <returns>A connected client.</returns>
    public static Task<NbdClient> ConnectAsync(NbdStreamFactory connect, string exportName, NbdClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new NbdClientOptions();
        return ConnectAsync(connect, exportName, options, options.Tls, options.Tls?.HostName, cancellationToken);
    }

    /// <summary>Asks the server about an export (size, flags, block sizes, available contexts) without using it.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <param name="options">Client settings.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The description.</returns>
    public static Task<NbdExportDescription> DescribeAsync(NbdUri uri, NbdClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new NbdClientOptions();
        var tls = options.Tls ?? NbdSocketConnector.TlsFromUri(uri);
        return DescribeAsync(NbdSocketConnector.Create(uri), uri.ExportName, options, tls, NbdSocketConnector.HostNameFor(uri, tls), cancellationToken);
    }

    /// <summary>Asks the server about an export over a stream from a factory.</summary>
    /// <param name="connect">Opens the stream.</param>
    /// <param name="exportName">The export name.</param>
    /// <param name="options">Client settings.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The description.</returns>
    public static Task<NbdExportDescription> DescribeAsync(NbdStreamFactory connect, string exportName, NbdClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new NbdClientOptions();
        return DescribeAsync(connect, exportName, options, options.Tls, options.Tls?.HostName, cancellationToken);
    }

    /// <summary>Whether a metadata context was negotiated.</summary>
    /// <param name="name">The context name.</param>
    /// <returns>True when block status can report it.</returns>
    public bool HasContext(string name) => Export.MetaContexts.Contains(name, StringComparer.Ordinal);

    /// <summary>Reads <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="buffer">Destination; filled completely on success, untouched by data of a failed read's missing ranges.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task that completes when every byte arrived.</returns>
    /// <exception cref="NbdRequestException">The server reported an error (it names the offset).</exception>
    public Task ReadAsync(ulong offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)buffer.Length, "READ");
        return Split(NbdCommand.Read, offset, (ulong)buffer.Length, Export.MaxPayload, (at, length, ct) =>
            Pick().SendAsync(NbdCommand.Read, NbdCommandFlags.None, at, length, default, buffer.Slice((int)(at - offset), (int)length), ct), cancellationToken);
    }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="fua">Persist before replying (needs NBD_FLAG_SEND_FUA).</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the server acknowledged every byte.</returns>
    public Task WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckWritable("WRITE");
        CheckRange(offset, (ulong)data.Length, "WRITE");
        var flags = FuaFlag(fua);
        return Split(NbdCommand.Write, offset, (ulong)data.Length, Export.MaxPayload, (at, length, ct) =>
            Pick().SendAsync(NbdCommand.Write, flags, at, length, data.Slice((int)(at - offset), (int)length), default, ct), cancellationToken);
    }

    /// <summary>Zeroes a range with WRITE_ZEROES.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="options">NO_HOLE / FAST_ZERO / FUA.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the range reads as zeroes.</returns>
    /// <exception cref="NotSupportedException">The server does not offer WRITE_ZEROES (or FAST_ZERO when asked).</exception>
    /// <exception cref="NbdRequestException">With <see cref="NbdErrorCode.NotSupported"/> when FAST_ZERO cannot be fast.</exception>
    public Task WriteZeroesAsync(ulong offset, ulong length, NbdZeroOptions options = NbdZeroOptions.None, CancellationToken cancellationToken = default)
    {
        CheckWritable("WRITE_ZEROES");
        Require(NbdTransmissionFlags.SendWriteZeroes, "WRITE_ZEROES");
        CheckRange(offset, length, "WRITE_ZEROES");
        var flags = FuaFlag((options & NbdZeroOptions.Fua) != 0);
        if ((options & NbdZeroOptions.NoHole) != 0)
        {
            flags |= NbdCommandFlags.NoHole;
        }

        if ((options & NbdZeroOptions.Fast) != 0)
        {
            Require(NbdTransmissionFlags.SendFastZero, "WRITE_ZEROES with FAST_ZERO");
            flags |= NbdCommandFlags.FastZero;
        }

        // Only a FAST_ZERO request may exceed the maximum block size (proto.md, "Block size constraints").
        var maxPiece = (options & NbdZeroOptions.Fast) != 0 ? MaxCommandLength : MaxBlockLength;
        return Split(NbdCommand.WriteZeroes, offset, length, maxPiece, (at, piece, ct) =>
            Pick().SendAsync(NbdCommand.WriteZeroes, flags, at, piece, default, default, ct), cancellationToken);
    }

    /// <summary>Tells the server a range is no longer needed (TRIM).</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="fua">Persist before replying.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the server acknowledged.</returns>
    public Task TrimAsync(ulong offset, ulong length, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckWritable("TRIM");
        Require(NbdTransmissionFlags.SendTrim, "TRIM");
        CheckRange(offset, length, "TRIM");
        var flags = FuaFlag(fua);
        return Split(NbdCommand.Trim, offset, length, MaxCommandLength, (at, piece, ct) =>
            Pick().SendAsync(NbdCommand.Trim, flags, at, piece, default, default, ct), cancellationToken);
    }

    /// <summary>Asks the server to prefetch a range (CACHE).</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the server acknowledged.</returns>
    public Task CacheAsync(ulong offset, ulong length, CancellationToken cancellationToken = default)
    {
        Require(NbdTransmissionFlags.SendCache, "CACHE");
        CheckRange(offset, length, "CACHE");
        return Split(NbdCommand.Cache, offset, length, MaxBlockLength, (at, piece, ct) =>
            Pick().SendAsync(NbdCommand.Cache, NbdCommandFlags.None, at, piece, default, default, ct), cancellationToken);
    }

    /// <summary>Flushes every connection (with multi-conn, a flush on one is visible on all, but each is flushed anyway).</summary>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when written data is persistent.</returns>
    public Task FlushAsync(CancellationToken cancellationToken = default)
    {
        Require(NbdTransmissionFlags.SendFlush, "FLUSH");
        return Task.WhenAll(_connections.Select(c => c.SendAsync(NbdCommand.Flush, NbdCommandFlags.None, 0, 0, default, default, cancellationToken)));
    }

    /// <summary>One BLOCK_STATUS request: the server may answer for less (or a little more) than asked.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length asked for (clamped to the export end).</param>
    /// <param name="requestOne">Set NBD_CMD_FLAG_REQ_ONE: one extent per context.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>Extents by context name, each list starting at <paramref name="offset"/>.</returns>
    public async Task<IReadOnlyDictionary<string, List<NbdExtent>>> GetBlockStatusAsync(ulong offset, uint length, bool requestOne = false, CancellationToken cancellationToken = default)
    {
        if (Export.MetaContexts.Count == 0)
        {
            throw new InvalidOperationException("BLOCK_STATUS needs at least one negotiated metadata context (and structured replies)");
        }

        if (offset >= Export.Size)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"offset is at or past the export end {Export.Size}");
        }

        length = (uint)Math.Min(length, Export.Size - offset);
        if (length == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "BLOCK_STATUS length must be positive");
        }

        var flags = requestOne ? NbdCommandFlags.RequestOne : NbdCommandFlags.None;
        var result = await Pick().SendAsync(NbdCommand.BlockStatus, flags, offset, length, default, default, cancellationToken);
        return result!;
    }

    /// <summary>
    /// Walks block status over a range for the given contexts and returns each context's complete map,
    /// with adjacent extents of equal flags merged.
    /// </summary>
    /// <param name="contexts">Negotiated contexts to map; null for all.</param>
    /// <param name="offset">Start of the range.</param>
    /// <param name="length">Length of the range; null for the rest of the export.</param>
    /// <param name="cancellationToken">Cancels the walk.</param>
    /// <returns>Extents by context, covering exactly the range.</returns>
    public async Task<IReadOnlyDictionary<string, IReadOnlyList<NbdExtent>>> MapAsync(
        IReadOnlyCollection<string>? contexts = null,
        ulong offset = 0,
        ulong? length = null,
        CancellationToken cancellationToken = default)
    {
        var wanted = contexts?.ToList() ?? [.. Export.MetaContexts];
        foreach (var name in wanted)
        {
            if (!HasContext(name))
            {
                throw new InvalidOperationException($"metadata context '{name}' was not negotiated with the server");
            }
        }

        var end = length is { } l ? checked(offset + l) : Export.Size;
        if (end > Export.Size || offset > end)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"range [{offset}, {end}) passes the export end {Export.Size}");
        }

        var walker = new NbdExtentWalker(wanted, offset, end);
        while (walker.Next is { } at)
        {
            var asked = (uint)Math.Min(end - at, MaxBlockStatusLength);
            var reply = await GetBlockStatusAsync(at, asked, requestOne: false, cancellationToken);
            walker.Accept(at, reply);
        }

        return walker.Result;
    }

    /// <summary>Waits for requests in flight, then disconnects cleanly (NBD_CMD_DISC).</summary>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>A task that completes when every connection is closed.</returns>
    public Task DisconnectAsync(CancellationToken cancellationToken = default)
        => Task.WhenAll(_connections.Select(c => c.DisconnectAsync(cancellationToken)));

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }
    }

    // Largest length for commands without payload: a multiple of the minimum block size below 4 GiB.
    private uint MaxCommandLength => uint.MaxValue / Export.BlockSizes.Minimum * Export.BlockSizes.Minimum;

    // Largest length for CACHE and WRITE_ZEROES without FAST_ZERO: the server's maximum block size.
    private uint MaxBlockLength => Math.Min(Export.BlockSizes.Maximum, MaxCommandLength);

    // Largest BLOCK_STATUS length asked for: 2 GiB keeps every server's arithmetic comfortable.
    private uint MaxBlockStatusLength => Math.Min(0x8000_0000u, MaxCommandLength);

    private static async Task<NbdClient> ConnectAsync(NbdStreamFactory connect, string exportName, NbdClientOptions options, NbdTlsOptions? tls, string? hostName, CancellationToken cancellationToken)
    {
        options.Validate();
        var first = await ConnectOneAsync(connect, exportName, options, tls, hostName, 0, cancellationToken);
        var connections = new List<NbdConnection> { first };
        try
        {
            if (options.Connections > 1 && first.Export.CanMultiConn)
            {
                var more = await Task.WhenAll(Enumerable.Range(1, options.Connections - 1)
                    .Select(i => ConnectOneAsync(connect, exportName, options, tls, hostName, i, cancellationToken)));
                connections.AddRange(more);
                foreach (var other in more)
                {
                    if (other.Export.Size != first.Export.Size
                        || other.Export.Flags != first.Export.Flags
                        || !other.Export.MetaContexts.Order(StringComparer.Ordinal).SequenceEqual(first.Export.MetaContexts.Order(StringComparer.Ordinal)))
                    {
                        throw new NbdProtocolException($"connection {other.Index} to export '{exportName}' negotiated a different size, flags or contexts than the first");
                    }
                }
            }

            return new NbdClient([.. connections]);
        }
        catch
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }

            throw;
        }
    }

    private static async Task<NbdConnection> ConnectOneAsync(NbdStreamFactory connect, string exportName, NbdClientOptions options, NbdTlsOptions? tls, string? hostName, int index, CancellationToken cancellationToken)
    {
        var negotiation = await NegotiateAsync(
            connect,
            exportName,
            options,
            stream => new NbdNegotiator(stream, exportName, options, tls, hostName).Negotiate(),
            "connecting to",
            cancellationToken);
        return new NbdConnection(negotiation, options, index);
    }

    private static Task<NbdExportDescription> DescribeAsync(NbdStreamFactory connect, string exportName, NbdClientOptions options, NbdTlsOptions? tls, string? hostName, CancellationToken cancellationToken)
    {
        options.Validate();
        return NegotiateAsync(
            connect,
            exportName,
            options,
            stream =>
            {
                using (stream)
                {
                    return new NbdNegotiator(stream, exportName, options, tls, hostName).Describe();
                }
            },
            "querying",
            cancellationToken);
    }

    /// <summary>
    /// Opens a stream and runs a blocking negotiation on a worker thread. Cancellation and the connect
    /// timeout abort it by disposing the stream; the stream is disposed on every failure path.
    /// </summary>
    private static async Task<T> NegotiateAsync<T>(NbdStreamFactory connect, string exportName, NbdClientOptions options, Func<Stream, T> negotiate, string what, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (options.ConnectTimeout != Timeout.InfiniteTimeSpan)
        {
            timeout.CancelAfter(options.ConnectTimeout);
        }

        Stream? stream = null;
        try
        {
            stream = await connect(timeout.Token);
            T result;
            var owned = stream;
            await using (timeout.Token.UnsafeRegister(static s => ((Stream)s!).Dispose(), owned))
            {
                result = await Task.Run(() => negotiate(owned), CancellationToken.None);
            }

            timeout.Token.ThrowIfCancellationRequested();
            return result;
        }
        catch (Exception e) when (timeout.IsCancellationRequested && e is OperationCanceledException or ObjectDisposedException or IOException or NbdException)
        {
            await DisposeQuietlyAsync(stream);
            cancellationToken.ThrowIfCancellationRequested();
            throw new NbdTimeoutException($"{what} export '{exportName}' took longer than {options.ConnectTimeout.TotalSeconds:0.###} s");
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            await DisposeQuietlyAsync(stream);
            throw new NbdConnectionException($"cannot connect to the NBD server: {e.Message}", e);
        }
        catch
        {
            await DisposeQuietlyAsync(stream);
            throw;
        }
    }

    private static async ValueTask DisposeQuietlyAsync(Stream? stream)
    {
        if (stream is not null)
        {
            await stream.DisposeAsync();
        }
    }

    private NbdConnection Pick()
    {
        if (_connections.Length == 1)
        {
            return _connections[0];
        }

        // A request issued by an inline continuation (InlineCompletions) stays on the connection whose reader
        // thread runs it, as nbdcopy keeps each connection's loop to itself: no other reader thread contends for
        // that connection's locks, and a completed read becomes the next request without crossing threads.
        if (NbdConnection.CurrentReader is { Failure: null } current && Array.IndexOf(_connections, current) >= 0)
        {
            return current;
        }

        var index = (uint)Interlocked.Increment(ref _next) % (uint)_connections.Length;
        return _connections[index];
    }

    private void CheckRange(ulong offset, ulong length, string what)
    {
        if (offset > Export.Size || length > Export.Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"{what} [{offset}, +{length}) passes the export end {Export.Size}");
        }

        var minimum = Export.BlockSizes.Minimum;
        if (minimum > 1 && (offset % minimum != 0 || length % minimum != 0))
        {
            throw new ArgumentException($"{what} [{offset}, +{length}) is not aligned to the server's minimum block size {minimum}");
        }
    }

    private void CheckWritable(string what)
    {
        if (Export.IsReadOnly)
        {
            throw new NotSupportedException($"{what} refused: export '{Export.Name}' is read-only");
        }
    }

    private void Require(NbdTransmissionFlags flag, string what)
    {
        if (!Export.Has(flag))
        {
            throw new NotSupportedException($"the server does not support {what} on export '{Export.Name}'");
        }
    }

    private NbdCommandFlags FuaFlag(bool fua)
    {
        if (!fua)
        {
            return NbdCommandFlags.None;
        }

        Require(NbdTransmissionFlags.SendFua, "FUA");
        return NbdCommandFlags.Fua;
    }

    /// <summary>
    /// Sends a large range as pieces of at most <paramref name="maxPiece"/> bytes, all in flight at once
    /// (the connection's limits throttle them). A piece refused with EINVAL or EOVERFLOW is retried as two
    /// smaller pieces, down to the preferred block size.
    /// </summary>
    private Task Split(NbdCommand command, ulong offset, ulong length, uint maxPiece, Func<ulong, uint, CancellationToken, Task> send, CancellationToken cancellationToken)
    {
        if (length == 0)
        {
            return Task.CompletedTask;
        }

        if (length <= maxPiece)
        {
            return SendWithRetryAsync(command, offset, (uint)length, send, cancellationToken);
        }

        var pieces = new List<Task>();
        for (var at = offset; at < offset + length; at += maxPiece)
        {
            var piece = (uint)Math.Min(maxPiece, offset + length - at);
            pieces.Add(SendWithRetryAsync(command, at, piece, send, cancellationToken));
        }

        return Task.WhenAll(pieces);
    }

    private async Task SendWithRetryAsync(NbdCommand command, ulong offset, uint length, Func<ulong, uint, CancellationToken, Task> send, CancellationToken cancellationToken)
    {
        try
        {
            await send(offset, length, cancellationToken);
        }
        catch (NbdRequestException e) when (e.Error is NbdErrorCode.InvalidArgument or NbdErrorCode.Overflow
                                            && command is NbdCommand.Read or NbdCommand.Write or NbdCommand.WriteZeroes or NbdCommand.Trim
                                            && length > RetryFloor)
        {
            var half = length / 2 / Export.BlockSizes.Minimum * Export.BlockSizes.Minimum;
            if (half == 0)
            {
                throw;
            }

            await SendWithRetryAsync(command, offset, half, send, cancellationToken);
            await SendWithRetryAsync(command, offset + half, length - half, send, cancellationToken);
        }
    }

    private uint RetryFloor => Math.Max(Export.BlockSizes.Preferred, Export.BlockSizes.Minimum);
}
