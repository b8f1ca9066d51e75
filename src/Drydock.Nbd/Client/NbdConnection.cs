using System.Buffers;
using Drydock.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Drydock.Nbd.Client;

/// <summary>
/// One NBD connection in the transmission phase: requests pipelined and matched by cookie, with limits on
/// requests and bytes in flight, a single reader loop that validates every reply, and a watchdog for replies
/// that never come. States: Ready → Closing → Closed, or Ready → Dead on any protocol violation, IO error
/// or timeout; a dead connection fails every request in flight with the cause.
/// </summary>
/// <remarks>
/// The socket IO is blocking, libnbd-style: a dedicated reader thread per connection, and writers that
/// write under the send lock. Measured against nbdcopy on this kind of machine, the asynchronous socket
/// path (epoll wake-up, then thread-pool dispatch per receive) cost several times nbdcopy's CPU per GiB;
/// blocking IO on a few dedicated threads does not. The public API stays asynchronous.
/// </remarks>
internal sealed partial class NbdConnection : IAsyncDisposable
{
    private const int SmallPayloadCoalesce = 16 * 1024;

    // Reads for headers ask for at most this much beyond what is needed (see Ensure).
    private const int HeaderReadSize = 4096;

    [ThreadStatic]
    private static NbdConnection? t_readerOf;

    private readonly Stream _stream;
    private readonly NbdClientOptions _options;
    private readonly IReadOnlyDictionary<uint, string> _contextsById;
    private readonly bool _structured;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly byte[] _receive;
    private readonly byte[] _send;
#pragma warning disable CA2213 // Not disposed on purpose: see DisposeAsync.
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly SemaphoreSlim _slots;
#pragma warning restore CA2213
    private readonly AsyncByteBudget _budget;
    private readonly Dictionary<ulong, NbdPendingRequest> _pending = [];
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Thread _readerThread;
    private readonly TaskCompletionSource _readerDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _watchdog;
    private readonly IDisposable? _ownedCertificate;
    private int _receiveStart;
    private int _receiveEnd;
    private ulong _nextCookie = 1;
    private Exception? _failure;
    private bool _disconnectSent;

    public NbdConnection(NbdNegotiation negotiation, NbdClientOptions options, int index)
    {
        _stream = negotiation.Stream;
        Export = negotiation.Export;
        _contextsById = negotiation.ContextsById;
        _ownedCertificate = negotiation.OwnedCertificate;
        _structured = negotiation.Export.StructuredReplies;
        _options = options;
        Index = index;
        _logger = options.LoggerFactory.CreateLogger<NbdConnection>();
        _time = options.TimeProvider;
        _receive = new byte[options.ReceiveBufferSize];
        _send = new byte[NbdSizes.RequestHeader + SmallPayloadCoalesce];
        _slots = new SemaphoreSlim(options.MaxRequestsInFlight, options.MaxRequestsInFlight);
        _budget = new AsyncByteBudget(options.MaxBytesInFlight);
        // The reader is a dedicated thread doing blocking reads: one wake-up per reply, no epoll hop and
        // thread-pool dispatch per receive. Closing the stream unblocks it.
        _readerThread = new Thread(ReadLoop) { IsBackground = true, Name = $"nbd-reader-{index}" };
        _readerThread.Start();
        _watchdog = options.RequestTimeout == Timeout.InfiniteTimeSpan ? Task.CompletedTask : Task.Run(WatchdogAsync);
    }

    public NbdExportInfo Export { get; }

    public int Index { get; }

    /// <summary>
    /// The connection whose reader thread is running the caller (an inline continuation of one of its requests), or
    /// null on any other thread.
    /// </summary>
    public static NbdConnection? CurrentReader => t_readerOf;

    /// <summary>Requests in flight right now.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    private bool IsDead => Volatile.Read(ref _failure) is not null;

    /// <summary>The error that killed the connection, if it is dead.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Sends a request and waits for its complete reply.</summary>
    /// <param name="command">The command.</param>
    /// <param name="flags">Command flags.</param>
    /// <param name="offset">Offset.</param>
    /// <param name="length">Length.</param>
    /// <param name="payload">WRITE payload (its length equals <paramref name="length"/>).</param>
    /// <param name="destination">READ destination (its length equals <paramref name="length"/>).</param>
    /// <param name="cancellationToken">Cancels waiting; a request already sent is still answered and its data discarded.</param>
    /// <returns>For BLOCK_STATUS, the extents by context; otherwise null.</returns>
    public async Task<IReadOnlyDictionary<string, List<NbdExtent>>?> SendAsync(
        NbdCommand command,
        NbdCommandFlags flags,
        ulong offset,
        uint length,
        ReadOnlyMemory<byte> payload,
        Memory<byte> destination,
        CancellationToken cancellationToken)
    {
        ThrowIfUnusable();
        var bytes = command is NbdCommand.Read or NbdCommand.Write ? (long)length : 0;
        if (payload.Length > 0 && Environment.CurrentManagedThreadId == _readerThread.ManagedThreadId)
        {
            // An inline continuation wants to send a payload from the reader thread. A blocking write there
            // could wait for a server that waits for us to read its replies: move to the thread pool first.
            await Task.Yield();
        }

        var request = new NbdPendingRequest(command, flags, offset, length, destination, _budget.Charge(bytes), _options.InlineCompletions);
        if (command == NbdCommand.Read && _structured)
        {
            request.Coverage = new NbdReadCoverage(offset, length);
        }
        else if (command == NbdCommand.BlockStatus)
        {
            request.BlockStatus = new NbdBlockStatusValidator(offset, length, (flags & NbdCommandFlags.RequestOne) != 0, Export.Size, _contextsById);
            request.Extents = [];
        }

        await _slots.WaitAsync(cancellationToken);
        try
        {
            await _budget.WaitAsync(request.Charge, cancellationToken);
        }
        catch
        {
            _slots.Release();
            throw;
        }

        var registered = false;
        try
        {
            lock (_lock)
            {
                ThrowIfUnusable();
                request.Cookie = _nextCookie++;
                request.StartedAt = _time.GetTimestamp();
                _pending.Add(request.Cookie, request);
                registered = true;
            }

            await _sendLock.WaitAsync(cancellationToken);
        }
        catch
        {
            if (registered)
            {
                lock (_lock)
                {
                    registered = !_pending.Remove(request.Cookie);
                }
            }

            if (!registered)
            {
                ReleaseCharge(request);
            }

            throw;
        }

        try
        {
            WriteRequest(request, payload.Span);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
        {
            Fail(new NbdConnectionException($"connection to the NBD server failed while sending {NbdNames.Command(command)}: {e.Message}", e));
        }
        finally
        {
            _sendLock.Release();
        }

        using var registration = request.RegisterCancellation(cancellationToken);
        return await request.Task;
    }

    /// <summary>Waits for requests in flight, sends NBD_CMD_DISC and closes the connection.</summary>
    public async Task DisconnectAsync(CancellationToken cancellationToken)
    {
        if (Failure is not null)
        {
            return;
        }

        // Let requests in flight finish (they were sent; their callers are waiting for them).
        while (InFlight > 0 && !IsDead)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(5), _time, cancellationToken);
        }

        await _sendLock.WaitAsync(cancellationToken);
        try
        {
            lock (_lock)
            {
                if (_failure is not null || _disconnectSent)
                {
                    return;
                }

                _disconnectSent = true;
            }

            WriteDisconnect();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The server may close first; the connection ends either way.
        }
        finally
        {
            _sendLock.Release();
        }

        Fail(new NbdConnectionException("the connection was closed by the client"), expected: true);
        await _readerDone.Task;
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new NbdConnectionException("the connection was closed by the client"), expected: true);
        await _readerDone.Task;
        await _watchdog.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _shutdown.Dispose();
        _ownedCertificate?.Dispose();

        // _sendLock and _slots are deliberately not disposed: requests racing with disposal still wait on and release
        // them (and then fail as a closed connection); a SemaphoreSlim whose AvailableWaitHandle is never used holds
        // nothing that needs disposing.
    }

    private void ThrowIfUnusable()
    {
        var failure = Volatile.Read(ref _failure);
        if (failure is not null)
        {
            throw failure switch
            {
                NbdConnectionException closed => new NbdConnectionException(closed.Message, closed),
                _ => new NbdConnectionException($"the NBD connection is dead: {failure.Message}", failure),
            };
        }

        if (_disconnectSent)
        {
            throw new NbdConnectionException("the connection is disconnecting");
        }
    }

    private void WriteRequest(NbdPendingRequest request, ReadOnlySpan<byte> payload)
    {
        var header = new NbdRequestHeader(request.Flags, request.Command, request.Cookie, request.Offset, request.Length);
        NbdTransmissionCodec.WriteRequest(_send, header);

        // A blocking write (see the class remarks); it cannot be abandoned half-way without corrupting the
        // stream, so it is not cancellable: closing the connection is the way to stop it. It blocks only
        // while the socket's send buffer is full, which is the backpressure we want.
        if (payload.Length <= SmallPayloadCoalesce)
        {
            payload.CopyTo(_send.AsSpan(NbdSizes.RequestHeader));
            _stream.Write(_send, 0, NbdSizes.RequestHeader + payload.Length);
        }
        else
        {
            _stream.Write(_send, 0, NbdSizes.RequestHeader);
            _stream.Write(payload);
        }

        _stream.Flush();
    }

    private void WriteDisconnect()
    {
        Span<byte> header = stackalloc byte[NbdSizes.RequestHeader];
        NbdTransmissionCodec.WriteRequest(header, new NbdRequestHeader(NbdCommandFlags.None, NbdCommand.Disconnect, 0, 0, 0));
        _stream.Write(header);
        _stream.Flush();
    }

    private void ReleaseCharge(NbdPendingRequest request)
    {
        _budget.Release(request.Charge);
        _slots.Release();
    }

    /// <summary>Marks the connection dead and closes the stream, which stops the reader loop.</summary>
    private void Fail(Exception error, bool expected = false)
    {
        lock (_lock)
        {
            if (_failure is not null)
            {
                return;
            }

            _failure = error;
        }

        if (!expected)
        {
            LogConnectionFailed(_logger, Index, error.Message);
            NbdInstruments.ConnectionFailed(error);
        }

        try
        {
            _shutdown.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }

        _stream.Dispose();
    }

    // ---------------------------------------------------------------------------------------- reader

    private void ReadLoop()
    {
        t_readerOf = this;
        try
        {
            while (true)
            {
                if (!Ensure(4, atMessageBoundary: true))
                {
                    return;
                }

                var magic = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(_receive.AsSpan(_receiveStart));
                var needed = magic switch
                {
                    NbdMagic.SimpleReply => NbdSizes.SimpleReplyHeader,
                    NbdMagic.StructuredReply or NbdMagic.ExtendedReply => NbdSizes.StructuredReplyHeader,

                    // Known bad at four bytes: do not wait for a whole header that may never come.
                    _ => throw new NbdProtocolException($"reply magic 0x{magic:x8} is wrong"),
                };
                Ensure(needed, atMessageBoundary: false);
                if (!NbdTransmissionCodec.TryReadReplyHeader(_receive.AsSpan(_receiveStart, _receiveEnd - _receiveStart), _structured, out var header, out var headerLength))
                {
                    throw new NbdProtocolException("truncated reply header");
                }

                _receiveStart += headerLength;
                var request = Lookup(header.Cookie);
                if (header.Kind == NbdReplyKind.Simple)
                {
                    HandleSimple(request, header);
                }
                else
                {
                    HandleChunk(request, header);
                }
            }
        }
        catch (Exception e)
        {
            Fail(e switch
            {
                NbdException => e,
                _ when Volatile.Read(ref _failure) is not null => e,
                IOException or ObjectDisposedException => new NbdConnectionException($"connection to the NBD server failed: {e.Message}", e),
                _ => new NbdConnectionException($"NBD reply processing failed: {e.Message}", e),
            });
        }
        finally
        {
            FailAllPending();
            _readerDone.TrySetResult();
        }
    }

    private void FailAllPending()
    {
        NbdPendingRequest[] orphans;
        lock (_lock)
        {
            orphans = [.. _pending.Values];
            _pending.Clear();
        }

        var failure = Volatile.Read(ref _failure) ?? new NbdConnectionException("the connection ended");
        foreach (var request in orphans)
        {
            request.Fail(failure);
            ReleaseCharge(request);
        }
    }

    private NbdPendingRequest Lookup(ulong cookie)
    {
        lock (_lock)
        {
            if (_pending.TryGetValue(cookie, out var request))
            {
                return request;
            }
        }

        throw new NbdProtocolException($"server replied with cookie {cookie}, which matches no request in flight");
    }

    private void HandleSimple(NbdPendingRequest request, NbdReplyHeader header)
    {
        if (request.Command == NbdCommand.Read && _structured)
        {
            throw new NbdProtocolException($"server sent a simple reply to READ [{request.Offset}, +{request.Length}) although structured replies were negotiated");
        }

        if (header.Error != NbdErrorCode.None)
        {
            request.RecordError(new NbdErrorChunk(header.Error, string.Empty, null));
        }
        else if (request.Command == NbdCommand.BlockStatus)
        {
            throw new NbdProtocolException("server sent a simple success reply to BLOCK_STATUS; it must be structured");
        }
        else if (request.Command == NbdCommand.Read)
        {
            ReceiveInto(request, request.Destination.Span);
        }

        Finish(request);
    }

    private void HandleChunk(NbdPendingRequest request, NbdReplyHeader header)
    {
        switch (header.ChunkType)
        {
            case NbdReplyChunkType.None:
                if (header.Length != 0)
                {
                    throw new NbdProtocolException($"NBD_REPLY_TYPE_NONE with length {header.Length}");
                }

                if (!header.IsDone)
                {
                    throw new NbdProtocolException("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE");
                }

                break;
            case NbdReplyChunkType.OffsetData:
                ExpectCommand(request, header, NbdCommand.Read);
                if (header.Length < 9)
                {
                    // Checked before waiting for the offset, which would otherwise eat the next message.
                    throw new NbdProtocolException($"NBD_REPLY_TYPE_OFFSET_DATA length {header.Length} is below the minimum of 9");
                }

                Ensure(8, atMessageBoundary: false);
                var dataOffset = NbdTransmissionCodec.ReadOffsetDataOffset(_receive.AsSpan(_receiveStart), header.Length);
                _receiveStart += 8;
                var dataLength = header.Length - 8u;
                request.Coverage!.Add(dataOffset, dataLength, header.ChunkType);
                var start = (int)(dataOffset - request.Offset);
                ReceiveInto(request, request.Destination.Span.Slice(start, (int)dataLength));
                break;
            case NbdReplyChunkType.OffsetHole:
                ExpectCommand(request, header, NbdCommand.Read);
                if (header.Length != 12)
                {
                    throw new NbdProtocolException($"NBD_REPLY_TYPE_OFFSET_HOLE length must be 12, not {header.Length}");
                }

                Ensure(12, atMessageBoundary: false);
                var holeOffset = NbdTransmissionCodec.ParseOffsetHole(_receive.AsSpan(_receiveStart, 12), out var holeLength);
                _receiveStart += 12;
                request.Coverage!.Add(holeOffset, holeLength, header.ChunkType);
                if (request.BeginWrite())
                {
                    // A hole reads as zeroes: that is its meaning, not a fill-in for missing data.
                    request.Destination.Span.Slice((int)(holeOffset - request.Offset), (int)holeLength).Clear();
                    request.EndWrite();
                }

                break;
            case NbdReplyChunkType.BlockStatus:
                ExpectCommand(request, header, NbdCommand.BlockStatus);
                if (header.Length > (uint)_options.MaxBlockStatusPayload)
                {
                    throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS of {header.Length} bytes is over the cap of {_options.MaxBlockStatusPayload}");
                }

                WithPayload((int)header.Length, request, static (payload, r, _) =>
                {
                    var contextId = NbdTransmissionCodec.ParseBlockStatus(payload, out var descriptors);
                    var extents = new List<NbdExtent>(descriptors.Length / NbdSizes.BlockDescriptor);
                    var name = r.BlockStatus!.Accept(contextId, descriptors, extents);
                    r.Extents![name] = extents;
                }, header.ChunkType);
                break;
            default:
                if (!header.IsErrorChunk)
                {
                    throw new NbdProtocolException($"server sent {NbdNames.Chunk(header.ChunkType)}, an unknown or unexpected chunk type, in reply to {NbdNames.Command(request.Command)}");
                }

                const int maxErrorChunk = 6 + NbdSizes.MaxString + 8;
                if (header.Length > maxErrorChunk)
                {
                    throw new NbdProtocolException($"{NbdNames.Chunk(header.ChunkType)} of {header.Length} bytes is over the cap of {maxErrorChunk}");
                }

                WithPayload((int)header.Length, request, static (payload, r, chunkType) =>
                {
                    // Unknown error chunk types share the error/message prefix; only its known fields are read.
                    var type = chunkType is NbdReplyChunkType.Error or NbdReplyChunkType.ErrorOffset
                        ? chunkType
                        : (NbdReplyChunkType)0xFFFF;
                    var error = NbdTransmissionCodec.ParseErrorChunk(payload, type);
                    if (error.Offset is { } at)
                    {
                        if (at < r.Offset || at - r.Offset >= r.Length)
                        {
                            throw new NbdProtocolException($"NBD_REPLY_TYPE_ERROR_OFFSET offset {at} lies outside the request [{r.Offset}, +{r.Length})");
                        }
                    }

                    r.RecordError(error);
                }, header.ChunkType);
                break;
        }

        if (header.IsDone)
        {
            Finish(request);
        }
    }

    private static void ExpectCommand(NbdPendingRequest request, NbdReplyHeader header, NbdCommand expected)
    {
        if (request.Command != expected)
        {
            throw new NbdProtocolException($"server sent {NbdNames.Chunk(header.ChunkType)} in reply to {NbdNames.Command(request.Command)}");
        }
    }

    private void Finish(NbdPendingRequest request)
    {
        lock (_lock)
        {
            _pending.Remove(request.Cookie);
        }

        ReleaseCharge(request);
        NbdInstruments.RequestCompleted(request.Command, request.Length, _time.GetElapsedTime(request.StartedAt), request.Error?.Error ?? NbdErrorCode.None);
        if (request.Error is { } error)
        {
            request.Fail(new NbdRequestException(request.Command, request.Offset, request.Length, error.Error, error.Message, error.Offset));
            return;
        }

        if (request.Coverage is { IsComplete: false } coverage)
        {
            var violation = new NbdProtocolException($"server ended the reply to READ [{request.Offset}, +{request.Length}) with bytes missing from offset {coverage.FirstMissing()}");
            request.Fail(violation);
            throw violation;
        }

        if (request.BlockStatus is { IsComplete: false })
        {
            var missing = _contextsById.Values.Where(name => !request.Extents!.ContainsKey(name));
            var violation = new NbdProtocolException($"server ended the BLOCK_STATUS reply at offset {request.Offset} without extents for {string.Join(", ", missing)}");
            request.Fail(violation);
            throw violation;
        }

        request.Complete(request.Extents is null ? null : request.Extents);
    }

    // ------------------------------------------------------------------------------ buffered receive

    /// <summary>
    /// Ensures <paramref name="count"/> bytes are buffered. Reads ask for little more than needed, so that
    /// READ data mostly lands directly in the caller's buffer instead of being copied from ours.
    /// Returns false only on a clean end of stream at a message boundary.
    /// </summary>
    private bool Ensure(int count, bool atMessageBoundary)
    {
        if (_receiveEnd - _receiveStart >= count)
        {
            return true;
        }

        if (_receiveStart > 0)
        {
            var buffered = _receiveEnd - _receiveStart;
            _receive.AsSpan(_receiveStart, buffered).CopyTo(_receive);
            _receiveStart = 0;
            _receiveEnd = buffered;
        }

        while (_receiveEnd < count)
        {
            var ask = Math.Min(_receive.Length - _receiveEnd, Math.Max(count - _receiveEnd, HeaderReadSize));
            var read = _stream.Read(_receive.AsSpan(_receiveEnd, ask));
            if (read == 0)
            {
                if (atMessageBoundary && _receiveEnd == 0)
                {
                    int pending;
                    lock (_lock)
                    {
                        pending = _pending.Count;
                    }

                    if (pending == 0)
                    {
                        Fail(new NbdConnectionException(_disconnectSent ? "the connection was closed by the client" : "the server closed the connection"), expected: true);
                        return false;
                    }

                    throw new NbdConnectionException($"the server closed the connection with {pending} request(s) unanswered");
                }

                throw new NbdConnectionException("the server closed the connection in the middle of a reply");
            }

            _receiveEnd += read;
        }

        return true;
    }

    /// <summary>Receives exactly <paramref name="destination"/>.Length bytes of READ data (or discards them if the request was cancelled).</summary>
    private void ReceiveInto(NbdPendingRequest request, Span<byte> destination)
    {
        if (!request.BeginWrite())
        {
            Discard(destination.Length);
            return;
        }

        try
        {
            var buffered = Math.Min(_receiveEnd - _receiveStart, destination.Length);
            if (buffered > 0)
            {
                _receive.AsSpan(_receiveStart, buffered).CopyTo(destination);
                _receiveStart += buffered;
                destination = destination[buffered..];
            }

            while (destination.Length > 0)
            {
                var read = _stream.Read(destination);
                if (read == 0)
                {
                    throw new NbdConnectionException($"the server closed the connection in the middle of READ data for [{request.Offset}, +{request.Length})");
                }

                destination = destination[read..];
            }
        }
        finally
        {
            request.EndWrite();
        }
    }

    private void Discard(int count)
    {
        while (count > 0)
        {
            if (_receiveEnd == _receiveStart)
            {
                _receiveStart = _receiveEnd = 0;
                var read = _stream.Read(_receive);
                if (read == 0)
                {
                    throw new NbdConnectionException("the server closed the connection in the middle of a reply");
                }

                _receiveEnd = read;
            }

            var take = Math.Min(count, _receiveEnd - _receiveStart);
            _receiveStart += take;
            count -= take;
        }
    }

    /// <summary>Reads a whole payload and hands it to <paramref name="process"/>; payloads larger than our buffer go through a pooled one.</summary>
    private void WithPayload(int length, NbdPendingRequest request, PayloadAction process, NbdReplyChunkType chunkType)
    {
        if (length <= _receive.Length)
        {
            Ensure(length, atMessageBoundary: false);
            process(_receive.AsSpan(_receiveStart, length), request, chunkType);
            _receiveStart += length;
            return;
        }

        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var target = rented.AsSpan(0, length);
            var buffered = Math.Min(_receiveEnd - _receiveStart, length);
            _receive.AsSpan(_receiveStart, buffered).CopyTo(target);
            _receiveStart += buffered;
            var rest = target[buffered..];
            while (rest.Length > 0)
            {
                var read = _stream.Read(rest);
                if (read == 0)
                {
                    throw new NbdConnectionException("the server closed the connection in the middle of a reply");
                }

                rest = rest[read..];
            }

            process(target, request, chunkType);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private delegate void PayloadAction(ReadOnlySpan<byte> payload, NbdPendingRequest request, NbdReplyChunkType chunkType);

    // ------------------------------------------------------------------------------------- watchdog

    private async Task WatchdogAsync()
    {
        var timeout = _options.RequestTimeout;
        var period = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.FromMilliseconds(10).Ticks, TimeSpan.FromSeconds(1).Ticks));
        try
        {
            while (!_shutdown.IsCancellationRequested)
            {
                await Task.Delay(period, _time, _shutdown.Token);
                NbdPendingRequest? late = null;
                lock (_lock)
                {
                    foreach (var request in _pending.Values)
                    {
                        if (_time.GetElapsedTime(request.StartedAt) > timeout)
                        {
                            late = request;
                            break;
                        }
                    }
                }

                if (late is not null)
                {
                    Fail(new NbdTimeoutException(
                        $"no complete reply to {NbdNames.Command(late.Command)} [{late.Offset}, +{late.Length}) within {timeout.TotalSeconds:0.###} s; the connection was closed"));
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD connection {Connection} failed: {Reason}")]
    private static partial void LogConnectionFailed(ILogger logger, int connection, string reason);
}
