using System.Net.Sockets;
using Drydock.Nbd;
using Drydock.Nbd.Client;

namespace Drydock.Transfer.Backup;

/// <summary>
/// The NBD client of one disk's backup, re-opened when its connection dies (F23). Readers take the current client with
/// its generation; a reader whose request failed at the connection level asks for a reconnect of that generation, and
/// only the first such request per generation reconnects (the others retry on the new client). Reconnects are bounded:
/// after <c>maxAttempts</c> reconnects without a successful request in between, the disk fails.
/// </summary>
internal sealed class SourceConnection : IAsyncDisposable
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

    private SourceConnection(NbdClient client, Func<CancellationToken, Task<NbdClient>> connect, int maxAttempts, TimeProvider time, Action<int, Exception>? onReconnect)
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
    public static async Task<SourceConnection> OpenAsync(Func<CancellationToken, Task<NbdClient>> connect, int maxAttempts, TimeProvider time, Action<int, Exception>? onReconnect, CancellationToken cancellationToken)
    {
        var client = await connect(cancellationToken);
        return new SourceConnection(client, connect, maxAttempts, time, onReconnect);
    }

    /// <summary>Whether an error means the connection is dead (the request may succeed on a new one).</summary>
    public static bool IsConnectionFailure(Exception error) =>
        error is NbdConnectionException or NbdTimeoutException or NbdProtocolException or IOException or SocketException or ObjectDisposedException;

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
