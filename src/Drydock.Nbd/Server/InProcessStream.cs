using System.Buffers;
using System.Threading.Channels;

namespace Drydock.Nbd.Server;

/// <summary>
/// One end of an in-memory, full-duplex byte stream (like a connected socket pair), used to serve NBD
/// inside a process. Writes are copied into pooled segments and queued (bounded, so a writer waits for a
/// slow reader); disposing one end gives the other end EOF after the queued bytes and fails its writes.
/// </summary>
internal sealed class InProcessStream : Stream
{
    private const int SegmentSize = 64 * 1024;
    private const int QueuedSegments = 32;

    private readonly Channel<Segment> _incoming;
    private readonly Channel<Segment> _outgoing;
    private Segment _current;
    private int _position;
    private int _disposed;

    private InProcessStream(Channel<Segment> incoming, Channel<Segment> outgoing)
    {
        _incoming = incoming;
        _outgoing = outgoing;
    }

    /// <inheritdoc/>
    public override bool CanRead => true;

    /// <inheritdoc/>
    public override bool CanWrite => true;

    /// <inheritdoc/>
    public override bool CanSeek => false;

    /// <inheritdoc/>
    public override long Length => throw new NotSupportedException();

    /// <inheritdoc/>
    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>Creates two connected ends.</summary>
    /// <returns>The two ends: what one writes, the other reads.</returns>
    public static (InProcessStream First, InProcessStream Second) CreatePair()
    {
        var options = new BoundedChannelOptions(QueuedSegments) { SingleReader = true, SingleWriter = false, FullMode = BoundedChannelFullMode.Wait };
        var forward = Channel.CreateBounded<Segment>(options);
        var backward = Channel.CreateBounded<Segment>(options);
        return (new InProcessStream(backward, forward), new InProcessStream(forward, backward));
    }

    /// <inheritdoc/>
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (buffer.Length == 0)
        {
            return 0;
        }

        if (_current.Array is null)
        {
            try
            {
                while (!_incoming.Reader.TryRead(out _current))
                {
                    if (!await _incoming.Reader.WaitToReadAsync(cancellationToken))
                    {
                        return 0;
                    }
                }
            }
            catch (ChannelClosedException e)
            {
                throw new IOException("the in-process stream was closed", e);
            }

            _position = 0;
        }

        var count = Math.Min(buffer.Length, _current.Length - _position);
        _current.Array.AsSpan(_position, count).CopyTo(buffer.Span);
        _position += count;
        if (_position == _current.Length)
        {
            ArrayPool<byte>.Shared.Return(_current.Array);
            _current = default;
        }

        return count;
    }

    /// <inheritdoc/>
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        while (buffer.Length > 0)
        {
            var count = Math.Min(buffer.Length, SegmentSize);
            var array = ArrayPool<byte>.Shared.Rent(count);
            buffer.Span[..count].CopyTo(array);
            try
            {
                await _outgoing.Writer.WriteAsync(new Segment(array, count), cancellationToken);
            }
            catch (Exception e) when (e is ChannelClosedException or OperationCanceledException)
            {
                ArrayPool<byte>.Shared.Return(array);
                if (e is OperationCanceledException)
                {
                    throw;
                }

                throw new IOException("the other end of the in-process stream was closed", e);
            }

            buffer = buffer[count..];
        }
    }

    /// <inheritdoc/>
    public override int Read(byte[] buffer, int offset, int count)
        => throw new NotSupportedException("the in-process stream is asynchronous only");

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count)
        => throw new NotSupportedException("the in-process stream is asynchronous only");

    /// <inheritdoc/>
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc/>
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc/>
    public override void Flush()
    {
    }

    /// <inheritdoc/>
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override void SetLength(long value) => throw new NotSupportedException();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            // The peer reads what was queued, then EOF; its writes to us fail; our pending read fails.
            _outgoing.Writer.TryComplete();
            _incoming.Writer.TryComplete(new IOException("the in-process stream was closed"));
            while (_incoming.Reader.TryRead(out var segment))
            {
                ArrayPool<byte>.Shared.Return(segment.Array);
            }
        }

        base.Dispose(disposing);
    }

    private readonly record struct Segment(byte[] Array, int Length);
}
