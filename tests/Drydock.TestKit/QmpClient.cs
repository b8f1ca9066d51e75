using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Drydock.TestKit;

/// <summary>A QMP command failed: QEMU answered <c>{"error":{"class":…,"desc":…}}</c>.</summary>
public sealed class QmpException : Exception
{
    /// <summary>Creates the exception.</summary>
    public QmpException(string command, string errorClass, string description)
        : base($"QMP command '{command}' failed: {errorClass}: {description}")
    {
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    /// <summary>The command that failed.</summary>
    public string Command { get; }

    /// <summary>QEMU's error class (e.g. GenericError).</summary>
    public string ErrorClass { get; }

    /// <summary>QEMU's description.</summary>
    public string Description { get; }
}

/// <summary>
/// A minimal, test-only QMP client over a Unix socket: capabilities negotiation, commands matched to replies
/// by <c>id</c>, and events kept until a test waits for them. One reader loop; writes are serialised.
/// (The production QMP client belongs to Drydock.Hypervisor.Qemu.)
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<JsonElement>> _pending = new(StringComparer.Ordinal);
    private readonly List<JsonElement> _events = [];
    private readonly List<(Func<JsonElement, bool> Match, TaskCompletionSource<JsonElement> Completion)> _eventWaiters = [];
    private readonly Lock _eventLock = new();
    private readonly CancellationTokenSource _shutdown = new();
    private Task? _readLoop;
    private long _nextId;
    private Exception? _failure;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false);
    }

    /// <summary>The server's greeting (<c>{"QMP":{"version":…}}</c>).</summary>
    public JsonElement Greeting { get; private set; }

    /// <summary>How long a command may take unless the caller cancels sooner. Default 60 s.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(60);

    private static async Task<Socket> ConnectSocketAsync(string socketPath, CancellationToken cancellationToken)
    {
        for (var attempt = 0; ; attempt++)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                return socket;
            }
            catch (SocketException ex) when (attempt < 250 && ex.SocketErrorCode is SocketError.TryAgain or SocketError.WouldBlock or SocketError.AddressNotAvailable)
            {
                // The monitor's listen backlog is full while it accepts another client: retry for up to ~5 s.
                socket.Dispose();
                await Task.Delay(20, cancellationToken);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
    }

    /// <summary>Connects, reads the greeting and leaves capabilities negotiation mode (<c>qmp_capabilities</c>).</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken cancellationToken = default)
    {
        var socket = await ConnectSocketAsync(socketPath, cancellationToken);
        QmpClient? client = null;
        try
        {
            client = new QmpClient(socket);
            var greeting = await client._reader.ReadLineAsync(cancellationToken)
                ?? throw new IOException("QMP server closed the connection before its greeting.");
            using (var document = JsonDocument.Parse(greeting))
            {
                if (!document.RootElement.TryGetProperty("QMP", out _))
                {
                    throw new IOException("Not a QMP greeting: " + greeting);
                }

                client.Greeting = document.RootElement.Clone();
            }

            client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            await client.ExecuteAsync("qmp_capabilities", cancellationToken: cancellationToken);
            return client;
        }
        catch
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }
            else
            {
                socket.Dispose();
            }

            throw;
        }
    }

    /// <summary>Executes a command and returns its <c>return</c> value.</summary>
    /// <param name="command">The command name.</param>
    /// <param name="arguments">Its arguments, or null.</param>
    /// <param name="cancellationToken">Stops waiting (the command may still run in QEMU).</param>
    /// <returns>The <c>return</c> member of the reply.</returns>
    /// <exception cref="QmpException">QEMU answered with an error.</exception>
    /// <exception cref="TimeoutException">No reply within <see cref="CommandTimeout"/>.</exception>
    public async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default)
    {
        var id = "tk-" + Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);
        var completion = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = completion;
        try
        {
            if (_failure is not null)
            {
                throw new IOException("The QMP connection is closed.", _failure);
            }

            var message = new JsonObject { ["execute"] = command, ["id"] = id };
            if (arguments is not null)
            {
                message["arguments"] = arguments.DeepClone();
            }

            var line = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                await _stream.WriteAsync(line, cancellationToken);
                await _stream.FlushAsync(cancellationToken);
            }
            finally
            {
                _writeLock.Release();
            }

            JsonElement reply;
            try
            {
                reply = await completion.Task.WaitAsync(CommandTimeout, cancellationToken);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"QMP command '{command}' got no reply within {CommandTimeout.TotalSeconds:0.#} s.");
            }

            if (reply.TryGetProperty("error", out var error))
            {
                throw new QmpException(
                    command,
                    error.TryGetProperty("class", out var errorClass) ? errorClass.GetString() ?? "?" : "?",
                    error.TryGetProperty("desc", out var description) ? description.GetString() ?? string.Empty : string.Empty);
            }

            return reply.TryGetProperty("return", out var result) ? result : default;
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// Waits for an event named <paramref name="eventName"/> (optionally also matching
    /// <paramref name="predicate"/> on the whole event object), taking the oldest such event already received
    /// and not yet taken, or the next one to arrive.
    /// </summary>
    /// <returns>The whole event object (<c>event</c>, <c>data</c>, <c>timestamp</c>).</returns>
    /// <exception cref="TimeoutException">None arrived within <paramref name="timeout"/> (default 60 s).</exception>
    public async Task<JsonElement> WaitForEventAsync(string eventName, Func<JsonElement, bool>? predicate = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        bool Match(JsonElement e) =>
            e.TryGetProperty("event", out var name) && name.GetString() == eventName && (predicate is null || predicate(e));

        TaskCompletionSource<JsonElement> completion;
        lock (_eventLock)
        {
            var index = _events.FindIndex(Match);
            if (index >= 0)
            {
                var found = _events[index];
                _events.RemoveAt(index);
                return found;
            }

            if (_failure is not null)
            {
                throw new IOException("The QMP connection is closed.", _failure);
            }

            completion = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
            _eventWaiters.Add((Match, completion));
        }

        var limit = timeout ?? TimeSpan.FromSeconds(60);
        try
        {
            return await completion.Task.WaitAsync(limit, cancellationToken);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"QMP event '{eventName}' did not arrive within {limit.TotalSeconds:0.#} s.");
        }
        finally
        {
            lock (_eventLock)
            {
                _eventWaiters.RemoveAll(w => w.Completion == completion);
            }
        }
    }

    /// <summary>Closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        await _shutdown.CancelAsync();
        _socket.Dispose();
        if (_readLoop is not null)
        {
            try
            {
                await _readLoop;
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
            {
                // Closing is what ended it.
            }
        }

        _reader.Dispose();
        await _stream.DisposeAsync();
        _writeLock.Dispose();
        _shutdown.Dispose();
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                var line = await _reader.ReadLineAsync(_shutdown.Token) ?? throw new IOException("The QMP server closed the connection.");
                if (line.Length == 0)
                {
                    continue;
                }

                JsonElement message;
                using (var document = JsonDocument.Parse(line))
                {
                    message = document.RootElement.Clone();
                }

                if (message.TryGetProperty("event", out _))
                {
                    Deliver(message);
                }
                else if (message.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String
                    && _pending.TryGetValue(id.GetString()!, out var completion))
                {
                    completion.TrySetResult(message);
                }
            }
        }
        catch (Exception ex)
        {
            _failure = ex;
            foreach (var completion in _pending.Values)
            {
                completion.TrySetException(new IOException("The QMP connection closed before the reply.", ex));
            }

            lock (_eventLock)
            {
                foreach (var (_, completion) in _eventWaiters)
                {
                    completion.TrySetException(new IOException("The QMP connection closed before the event.", ex));
                }
            }

            if (ex is not (OperationCanceledException or ObjectDisposedException or IOException))
            {
                throw;
            }
        }
    }

    private void Deliver(JsonElement message)
    {
        lock (_eventLock)
        {
            foreach (var (match, completion) in _eventWaiters)
            {
                if (!completion.Task.IsCompleted && match(message))
                {
                    completion.TrySetResult(message);
                    return;
                }
            }

            _events.Add(message);
        }
    }
}
