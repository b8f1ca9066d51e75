using System.Net.Sockets;
using Drydock.Nbd;
using Drydock.Nbd.Client;

namespace Drydock.Transfer;

/// <summary>
/// The NBD client of one disk's backup source or restore target, re-opened when its connection dies (F23). Workers take
/// the current client with its generation; a worker whose request failed at the connection level asks for a reconnect of
/// that generation, and only the first such request per generation reconnects (the others retry on the new client).
/// Reconnects are bounded: after <c>maxAttempts</c> reconnects without a successful request in between, the disk fails.
/// Only idempotent operations go through it (reads, and writes of whole ranges whose content is fixed), so a request
/// that may or may not have reached the server before the connection died is simply sent again.
/// </summary>
internal sealed class ReconnectingClient : IAsyncDisposable
{
    private readonly Func<CancellationToken, Task<NbdClient>> _connect;
    private readonly int _maxAttempts;
    private readonly TimeProvider _time;
    private readonly Action<int, Exception>? _onReconnect;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Lock _swap = new();
    private NbdClient _client;
    private int _generation;
    private int _failuresSinceProgress;
    private int _reconnects;

    private ReconnectingClient(NbdClient client, Func<CancellationToken, Task<NbdClient>> connect, int maxAttempts, TimeProvider time, Action<int, Exception>? onReconnect)
    {
        _client = client;
        _connect = connect;
        _maxAttempts = maxAttempts;
        _time = time;
        _onReconnect = onReconnect;
    }

    /// <summary>The client in use and its generation.</summary>
    public (NbdClient Client, int Generation) Current
    {
        get
        {
            lock (_swap)
            {
                return (_client, _generation);
            }
        }
    }

    /// <summary>Connections re-opened so far.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);

    /// <summary>Opens the first connection.</summary>
    public static async Task<ReconnectingClient> OpenAsync(Func<CancellationToken, Task<NbdClient>> connect, int maxAttempts, TimeProvider time, Action<int, Exception>? onReconnect, CancellationToken cancellationToken)
    {
        var client = await connect(cancellationToken);
        return new ReconnectingClient(client, connect, maxAttempts, time, onReconnect);
    }

    /// <summary>Whether an error means the connection is dead (the request may succeed on a new one).</summary>
    public static bool IsConnectionFailure(Exception error) =>
        error is NbdConnectionException or NbdTimeoutException or NbdProtocolException or IOException or SocketException or ObjectDisposedException;

    /// <summary>
    /// Runs one operation on the current client; when the connection dies it is re-opened and the operation sent again,
    /// at most <c>maxAttempts</c> times for this operation and in a row. A per-request error (such as EIO) is not a
    /// connection failure: it propagates at once, never retried.
    /// </summary>
    /// <exception cref="ConnectionLostException">The reconnect budget is spent; carries the last failure.</exception>
    public async Task<T> RunAsync<T>(Func<NbdClient, CancellationToken, Task<T>> operation, CancellationToken cancellationToken)
    {
        var retries = 0;
        while (true)
        {
            var (client, generation) = Current;
            try
            {
                var result = await operation(client, cancellationToken);
                Succeeded();
                return result;
            }
            catch (Exception e) when (IsConnectionFailure(e) && !cancellationToken.IsCancellationRequested)
            {
                // Bounded twice: per operation (a range that always kills the connection), and per connection
                // (reconnects without any request succeeding in between).
                var last = ++retries > _maxAttempts ? e : await ReconnectAsync(generation, e, cancellationToken);
                if (last is not null)
                {
                    throw new ConnectionLostException(_maxAttempts, last);
                }
            }
        }
    }

    /// <summary>Runs one operation without a result, as <see cref="RunAsync{T}"/> does.</summary>
    /// <exception cref="ConnectionLostException">The reconnect budget is spent; carries the last failure.</exception>
    public Task RunAsync(Func<NbdClient, CancellationToken, Task> operation, CancellationToken cancellationToken) =>
        RunAsync(
            async (client, ct) =>
            {
                await operation(client, ct);
                return true;
            },
            cancellationToken);

    /// <summary>Records a successful request: the reconnect budget is full again.</summary>
    public void Succeeded()
    {
        if (Volatile.Read(ref _failuresSinceProgress) != 0)
        {
            Interlocked.Exchange(ref _failuresSinceProgress, 0);
        }
    }

    /// <summary>Replaces the client of <paramref name="failedGeneration"/> (once per generation).</summary>
    /// <param name="failedGeneration">The generation whose request failed.</param>
    /// <param name="cause">The failure.</param>
    /// <param name="cancellationToken">Cancels waiting and connecting.</param>
    /// <returns>The last failure when the reconnect budget is spent (the caller fails the disk), else null.</returns>
    public async Task<Exception?> ReconnectAsync(int failedGeneration, Exception cause, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_generation != failedGeneration)
            {
                return null;
            }

            // Every request still in flight on the old client fails and is retried on the new one.
            await DisposeQuietlyAsync(_client);
            while (true)
            {
                if (_failuresSinceProgress >= _maxAttempts)
                {
                    return cause;
                }

                var attempt = Interlocked.Increment(ref _failuresSinceProgress);
                _onReconnect?.Invoke(attempt, cause);
                await Task.Delay(TimeSpan.FromMilliseconds(50 * (1 << Math.Min(attempt - 1, 5))), _time, cancellationToken);
                try
                {
                    var client = await _connect(cancellationToken);
                    lock (_swap)
                    {
                        _client = client;
                        _generation++;
                    }

                    Interlocked.Increment(ref _reconnects);
                    return null;
                }
                catch (Exception e) when (IsConnectionFailure(e) && !cancellationToken.IsCancellationRequested)
                {
                    cause = e;
                }
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await DisposeQuietlyAsync(_client);
        _gate.Dispose();
    }

    private static async Task DisposeQuietlyAsync(NbdClient client)
    {
        try
        {
            await client.DisposeAsync();
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            // The connection was dead already.
        }
    }
}

/// <summary>A connection that kept dying: the reconnect budget is spent. The inner exception is the last failure.
/// Never leaves the assembly: the pipelines turn it into their typed errors naming disk and offset.</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1064:Exceptions should be public", Justification = "Internal signal, always mapped to SourceReadException or TargetWriteException before it leaves a pipeline.")]
internal sealed class ConnectionLostException(int attempts, Exception last)
    : Exception($"{attempts} reconnect(s) did not help: {last.Message}", last)
{
    /// <summary>The reconnects allowed.</summary>
    public int Attempts { get; } = attempts;
}
