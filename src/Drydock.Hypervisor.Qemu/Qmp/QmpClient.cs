using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>
/// A QMP client over a Unix socket (QEMU or qemu-storage-daemon monitor): reads the greeting, negotiates
/// capabilities, then runs commands matched to their replies by id while events arrive interleaved. One reader loop;
/// writes are serialised. A protocol violation or EOF ends the connection and fails every command in flight.
/// </summary>
public sealed partial class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly QmpClientOptions _options;
    private readonly ILogger _logger;
#pragma warning disable CA2213 // Not disposed on purpose: see DisposeAsync.
    private readonly SemaphoreSlim _writeLock = new(1, 1);
#pragma warning restore CA2213
    private readonly ConcurrentDictionary<string, TaskCompletionSource<QmpMessage>> _pending = new(StringComparer.Ordinal);
    private readonly Lock _subscriptionLock = new();
    private readonly List<QmpEventSubscription> _subscriptions = [];
    private readonly TaskCompletionSource<Exception?> _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<QmpMessage> _greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Exception? _closeReason;
    private Task? _readLoop;
    private long _nextId;
    private int _disposed;

    private QmpClient(Socket socket, string endpoint, QmpClientOptions options)
    {
        _socket = socket;
        Endpoint = endpoint;
        _options = options;
        _logger = options.LoggerFactory.CreateLogger<QmpClient>();
    }

    /// <summary>The monitor's socket path.</summary>
    public string Endpoint { get; }

    /// <summary>The greeting's <c>QMP</c> member (<c>version</c>, <c>capabilities</c>).</summary>
    public JsonElement Greeting { get; private set; }

    /// <summary>QEMU's version from the greeting, e.g. 7.2.22.</summary>
    public Version? QemuVersion { get; private set; }

    /// <summary>Completes when the connection ends, with the reason (null when disposed by us).</summary>
    public Task<Exception?> Closed => _closed.Task;

    /// <summary>Whether the connection is up.</summary>
    public bool IsConnected => !_closed.Task.IsCompleted;

    /// <summary>Connects, reads the greeting and leaves capabilities negotiation (<c>qmp_capabilities</c>).</summary>
    /// <param name="socketPath">The monitor's Unix socket.</param>
    /// <param name="options">Settings, or null for defaults.</param>
    /// <param name="cancellationToken">Cancels connecting.</param>
    /// <returns>The connected client.</returns>
    /// <exception cref="QmpConnectionException">Nothing listens there, or the handshake failed or timed out.</exception>
    public static async Task<QmpClient> ConnectAsync(string socketPath, QmpClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new QmpClientOptions();
        using var timeout = new CancellationTokenSource(options.ConnectTimeout, options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        Socket? socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        QmpClient? client = null;
        try
        {
            while (true)
            {
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), linked.Token);
                    break;
                }
                catch (SocketException ex) when (IsBacklogFull(ex) && File.Exists(socketPath))
                {
                    // The monitor's listen backlog is full (another client is being accepted): try again shortly,
                    // within the connect timeout.
                    socket.Dispose();
                    socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await Task.Delay(TimeSpan.FromMilliseconds(20), options.TimeProvider, linked.Token);
                }
                catch (SocketException ex)
                {
                    throw new QmpConnectionException($"Cannot connect to the QMP monitor {socketPath}: {(File.Exists(socketPath) ? ex.Message : "no such socket")}.", ex);
                }
            }

#pragma warning disable CA2000 // Disposed asynchronously in the finally block unless returned; the analyzer only sees Dispose().
            client = new QmpClient(socket, socketPath, options);
#pragma warning restore CA2000
            socket = null;
            client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            var greeting = await client._greeting.Task.WaitAsync(linked.Token);
            client.Greeting = greeting.Payload;
            client.QemuVersion = ParseVersion(greeting.Payload);
            await client.ExecuteAsync("qmp_capabilities", cancellationToken: linked.Token);
            Log.Connected(client._logger, socketPath, client.QemuVersion);
            var connected = client;
            client = null;
            return connected;
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new QmpConnectionException($"The QMP monitor {socketPath} did not complete its handshake within {options.ConnectTimeout.TotalSeconds:0.#} s.");
        }
        catch (Exception ex) when (ex is QmpProtocolException or IOException && ex is not QmpConnectionException)
        {
            throw new QmpConnectionException($"The QMP handshake with {socketPath} failed: {ex.Message}", ex);
        }
        finally
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }

            socket?.Dispose();
        }
    }

    /// <summary>Runs a command and returns its <c>return</c> value.</summary>
    /// <param name="command">The command name.</param>
    /// <param name="arguments">Its arguments, or null.</param>
    /// <param name="cancellationToken">Stops waiting (QEMU may still run the command).</param>
    /// <returns>The <c>return</c> member of the reply.</returns>
    /// <exception cref="QmpException">QEMU answered with an error.</exception>
    /// <exception cref="QmpConnectionException">The connection is closed or broke before the reply.</exception>
    /// <exception cref="TimeoutException">No reply within <see cref="QmpClientOptions.CommandTimeout"/>.</exception>
    public async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default)
    {
        var id = "dd-" + Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);
        var completion = new TaskCompletionSource<QmpMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = completion;
        try
        {
            if (_closed.Task.IsCompleted)
            {
                throw ClosedError(command);
            }

            var line = QmpProtocol.FormatCommand(command, id, arguments);
            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                await _socket.SendAsync(line, SocketFlags.None, cancellationToken);
            }
            catch (SocketException ex)
            {
                throw new QmpConnectionException($"Sending QMP command '{command}' to {Endpoint} failed: {ex.Message}", ex);
            }
            catch (ObjectDisposedException) when (Volatile.Read(ref _disposed) != 0)
            {
                // Disposed while sending (e.g. the monitor task saw the instance end): the connection is closed.
                throw ClosedError(command);
            }
            finally
            {
                _writeLock.Release();
            }

            Log.CommandSent(_logger, Endpoint, command, id);
            QmpMessage reply;
            try
            {
                reply = await completion.Task.WaitAsync(_options.CommandTimeout, _options.TimeProvider, cancellationToken);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"QMP command '{command}' on {Endpoint} got no reply within {_options.CommandTimeout.TotalSeconds:0.#} s.");
            }

            if (reply.Kind == QmpMessageKind.Error)
            {
                Log.CommandFailed(_logger, Endpoint, command, reply.ErrorClass!, reply.ErrorDescription!);
                throw new QmpException(command, reply.ErrorClass!, reply.ErrorDescription!, Endpoint);
            }

            return reply.Payload;
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// Starts receiving events (optionally only those <paramref name="filter"/> accepts). Subscribe before running the
    /// command whose event you wait for, so it cannot be missed. Dispose to stop.
    /// </summary>
    /// <param name="filter">Which events to keep, or null for all.</param>
    /// <returns>The subscription; its reader completes when the connection ends.</returns>
    public QmpEventSubscription SubscribeEvents(Func<QmpEvent, bool>? filter = null)
    {
        var subscription = new QmpEventSubscription(this, filter, _options.TimeProvider);
        lock (_subscriptionLock)
        {
            if (_closed.Task.IsCompleted)
            {
                subscription.Complete(ClosedError("(event subscription)"));
            }
            else
            {
                _subscriptions.Add(subscription);
            }
        }

        return subscription;
    }

    /// <summary>Closes the connection; commands in flight fail.</summary>
    /// <returns>A task that completes when the reader has stopped.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Fail(null);
        _socket.Dispose();
        if (_readLoop is not null)
        {
            await _readLoop;
        }

        // _writeLock is deliberately not disposed: a command racing with disposal may still wait on or release it, and
        // a SemaphoreSlim whose AvailableWaitHandle is never used holds nothing that needs disposing.
    }

    internal void Unsubscribe(QmpEventSubscription subscription)
    {
        lock (_subscriptionLock)
        {
            _subscriptions.Remove(subscription);
        }
    }

    // .NET reports a missing socket file (ENOENT) as AddressNotAvailable too, hence the caller's File.Exists check.
    private static bool IsBacklogFull(SocketException ex) =>
        ex.SocketErrorCode is SocketError.TryAgain or SocketError.WouldBlock or SocketError.AddressNotAvailable;

    private static Version? ParseVersion(JsonElement greeting)
    {
        try
        {
            var qemu = greeting.GetProperty("version").GetProperty("qemu");
            return new Version(qemu.GetProperty("major").GetInt32(), qemu.GetProperty("minor").GetInt32(), qemu.GetProperty("micro").GetInt32());
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    private QmpConnectionException ClosedError(string command) =>
        new($"The QMP connection to {Endpoint} is closed; '{command}' was not answered.", _closeReason);

    private async Task ReadLoopAsync()
    {
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        var start = 0;
        var end = 0;
        Exception? failure = null;
        try
        {
            while (true)
            {
                if (end == buffer.Length)
                {
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }
                    else
                    {
                        if (buffer.Length > QmpProtocol.MaxLineLength)
                        {
                            throw new QmpProtocolException($"QMP server {Endpoint} sent more than {QmpProtocol.MaxLineLength} bytes without a line end.");
                        }

                        var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        Buffer.BlockCopy(buffer, 0, larger, 0, end);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = larger;
                    }
                }

                var read = await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None, CancellationToken.None);
                if (read == 0)
                {
                    failure = new QmpConnectionException($"The QMP server {Endpoint} closed the connection.");
                    return;
                }

                end += read;
                var pending = new ReadOnlySequence<byte>(buffer, start, end - start);
                while (QmpProtocol.TryReadLine(ref pending, out var line))
                {
                    if (!QmpProtocol.IsBlank(line))
                    {
                        Dispatch(QmpProtocol.Parse(line));
                    }
                }

                start = end - (int)pending.Length;
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or QmpProtocolException)
        {
            failure = _disposed != 0 ? null : ex is QmpProtocolException ? ex : new QmpConnectionException($"The QMP connection to {Endpoint} broke: {ex.Message}", ex);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            if (failure is not null)
            {
                Log.ConnectionClosed(_logger, Endpoint, failure.Message);
            }

            Fail(failure);
        }
    }

    private void Dispatch(QmpMessage message)
    {
        switch (message.Kind)
        {
            case QmpMessageKind.Greeting:
                _greeting.TrySetResult(message);
                break;
            case QmpMessageKind.Event:
                var qmpEvent = new QmpEvent(message.EventName!, message.Payload, message.Timestamp);
                Log.EventReceived(_logger, Endpoint, qmpEvent.Name);
                lock (_subscriptionLock)
                {
                    foreach (var subscription in _subscriptions)
                    {
                        subscription.Offer(qmpEvent);
                    }
                }

                break;
            default:
                if (message.Id is not null && _pending.TryGetValue(message.Id, out var completion))
                {
                    completion.TrySetResult(message);
                }
                else if (message.Kind == QmpMessageKind.Error && message.Id is null)
                {
                    // QEMU answers a line it could not parse with an id-less error: nothing of ours is waiting for it.
                    Log.UnmatchedError(_logger, Endpoint, message.ErrorDescription ?? string.Empty);
                }

                break;
        }
    }

    private void Fail(Exception? reason)
    {
        lock (_subscriptionLock)
        {
            if (_closed.Task.IsCompleted)
            {
                return;
            }

            _closeReason = reason;
        }

        _closed.TrySetResult(reason);

        var error = reason ?? new QmpConnectionException($"The QMP connection to {Endpoint} was closed.");
        _greeting.TrySetException(error);
        foreach (var completion in _pending.Values)
        {
            completion.TrySetException(new QmpConnectionException($"The QMP connection to {Endpoint} ended before the reply: {error.Message}", error));
        }

        lock (_subscriptionLock)
        {
            foreach (var subscription in _subscriptions)
            {
                subscription.Complete(new QmpConnectionException($"The QMP connection to {Endpoint} ended: {error.Message}", error));
            }

            _subscriptions.Clear();
        }
    }
}

/// <summary>Events from a <see cref="QmpClient"/> since <see cref="QmpClient.SubscribeEvents"/>.</summary>
public sealed class QmpEventSubscription : IDisposable
{
    private readonly QmpClient _client;
    private readonly Func<QmpEvent, bool>? _filter;
    private readonly TimeProvider _timeProvider;
    private readonly Channel<QmpEvent> _channel = Channel.CreateUnbounded<QmpEvent>(new UnboundedChannelOptions { SingleReader = true });

    internal QmpEventSubscription(QmpClient client, Func<QmpEvent, bool>? filter, TimeProvider timeProvider)
    {
        _client = client;
        _filter = filter;
        _timeProvider = timeProvider;
    }

    /// <summary>The events, in arrival order; completes (with the reason) when the connection ends.</summary>
    public ChannelReader<QmpEvent> Reader => _channel.Reader;

    /// <summary>Waits for the first event (from those received since subscribing) that <paramref name="match"/> accepts.</summary>
    /// <param name="match">Which event.</param>
    /// <param name="timeout">How long to wait.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The event.</returns>
    /// <exception cref="TimeoutException">None came in time.</exception>
    /// <exception cref="QmpConnectionException">The connection ended first.</exception>
    public async Task<QmpEvent> WaitAsync(Func<QmpEvent, bool> match, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var limit = new CancellationTokenSource(timeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, limit.Token);
        try
        {
            await foreach (var qmpEvent in _channel.Reader.ReadAllAsync(linked.Token))
            {
                if (match(qmpEvent))
                {
                    return qmpEvent;
                }
            }
        }
        catch (OperationCanceledException) when (limit.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"The expected QMP event did not arrive from {_client.Endpoint} within {timeout.TotalSeconds:0.#} s.");
        }
        catch (ChannelClosedException ex) when (ex.InnerException is QmpConnectionException connection)
        {
            throw connection;
        }

        throw new QmpConnectionException($"The QMP connection to {_client.Endpoint} ended before the expected event.");
    }

    /// <summary>Stops receiving events.</summary>
    public void Dispose()
    {
        _client.Unsubscribe(this);
        _channel.Writer.TryComplete();
    }

    internal void Offer(QmpEvent qmpEvent)
    {
        if (_filter is null || _filter(qmpEvent))
        {
            _channel.Writer.TryWrite(qmpEvent);
        }
    }

    internal void Complete(Exception error) => _channel.Writer.TryComplete(error);
}
