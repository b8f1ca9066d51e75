using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Drydock.Nbd.Server;

/// <summary>
/// A small NBD server: fixed-newstyle handshake with TLS, structured replies, <c>base:allocation</c> and
/// <c>qemu:dirty-bitmap:NAME</c> contexts; exports served from memory or files. It listens on Unix sockets
/// and/or TCP loopback, or serves given streams. Connections are independent: one bad client is closed
/// without disturbing the others. For tests it injects the faults of <see cref="NbdServerOptions.Faults"/>.
/// </summary>
public sealed partial class NbdServer : IAsyncDisposable, INbdExportCatalog
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, NbdExport> _exports = new(StringComparer.Ordinal);
    private readonly Dictionary<long, Task> _sessions = [];
    private readonly List<Listener> _listeners = [];
    private readonly CancellationTokenSource _stopping = new();
    private readonly ILogger _logger;
    private NbdExport[] _exportList = [];
    private long _nextId;
    private long _totalConnections;
    private bool _stopped;
    private bool _disposed;

    /// <summary>Creates a server with no exports and no listeners.</summary>
    /// <param name="options">Settings; null for the defaults.</param>
    public NbdServer(NbdServerOptions? options = null)
    {
        options ??= new NbdServerOptions();
        options.Validate();
        Options = options;
        _logger = options.LoggerFactory.CreateLogger<NbdServer>();
    }

    /// <summary>The settings.</summary>
    public NbdServerOptions Options { get; }

    /// <summary>The exports, in the order they were added.</summary>
    public IReadOnlyList<NbdExport> Exports => Volatile.Read(ref _exportList);

    /// <summary>Connections open right now.</summary>
    public int ActiveConnections
    {
        get
        {
            lock (_lock)
            {
                return _sessions.Count;
            }
        }
    }

    /// <summary>Connections accepted since the server was created.</summary>
    public long TotalConnections => Interlocked.Read(ref _totalConnections);

    /// <summary>The Unix socket the server listens on, if any.</summary>
    public string? UnixSocketPath { get; private set; }

    /// <summary>The TCP endpoint the server listens on, if any.</summary>
    public IPEndPoint? TcpEndPoint { get; private set; }

    /// <summary>Adds an export.</summary>
    /// <param name="export">The export; its name must be new.</param>
    /// <returns>The export.</returns>
    /// <exception cref="InvalidOperationException">An export of that name exists.</exception>
    public NbdExport AddExport(NbdExport export)
    {
        lock (_lock)
        {
            if (!_exports.TryAdd(export.Name, export))
            {
                throw new InvalidOperationException($"the server already has an export named '{export.Name}'");
            }

            Volatile.Write(ref _exportList, [.. _exportList, export]);
        }

        return export;
    }

    /// <summary>Removes an export. Connections already using it keep it until they close.</summary>
    /// <param name="name">The export name.</param>
    /// <returns>False when there was none.</returns>
    public bool RemoveExport(string name)
    {
        lock (_lock)
        {
            if (!_exports.Remove(name, out var export))
            {
                return false;
            }

            Volatile.Write(ref _exportList, [.. _exportList.Where(e => e != export)]);
            return true;
        }
    }

    /// <summary>Finds an export by name.</summary>
    /// <param name="name">The export name.</param>
    /// <returns>The export, or null.</returns>
    public NbdExport? FindExport(string name)
    {
        lock (_lock)
        {
            return _exports.GetValueOrDefault(name);
        }
    }

    /// <summary>Starts listening on a Unix domain socket (the file is removed again when the server stops).</summary>
    /// <param name="path">Socket path; it must not exist.</param>
    /// <returns>The path.</returns>
    public string ListenUnix(string path)
    {
        Socket? socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            socket.Listen(128);
            Start(socket, path, path);
            socket = null;
        }
        finally
        {
            socket?.Dispose();
        }

        UnixSocketPath = path;
        return path;
    }

    /// <summary>Starts listening on TCP.</summary>
    /// <param name="port">Port; 0 (the default) picks a free one.</param>
    /// <param name="address">Address; default 127.0.0.1.</param>
    /// <returns>The endpoint, with the actual port.</returns>
    public IPEndPoint ListenTcp(int port = 0, IPAddress? address = null)
    {
        var endpoint = new IPEndPoint(address ?? IPAddress.Loopback, port);
        Socket? socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(endpoint);
            socket.Listen(128);
            var bound = (IPEndPoint)socket.LocalEndPoint!;
            Start(socket, bound.ToString(), null);
            socket = null;
            TcpEndPoint = bound;
            return bound;
        }
        finally
        {
            socket?.Dispose();
        }
    }

    /// <summary>The URI of an export over the Unix socket.</summary>
    /// <param name="exportName">The export name.</param>
    /// <returns>An <c>nbd+unix://</c> URI.</returns>
    /// <exception cref="InvalidOperationException">The server does not listen on a Unix socket.</exception>
    public NbdUri GetUnixUri(string exportName = "")
        => NbdUri.ForUnixSocket(UnixSocketPath ?? throw new InvalidOperationException("the server does not listen on a Unix socket"), exportName);

    /// <summary>The URI of an export over TCP.</summary>
    /// <param name="exportName">The export name.</param>
    /// <returns>An <c>nbd://</c> URI.</returns>
    /// <exception cref="InvalidOperationException">The server does not listen on TCP.</exception>
    public NbdUri GetTcpUri(string exportName = "")
    {
        var endpoint = TcpEndPoint ?? throw new InvalidOperationException("the server does not listen on TCP");
        return NbdUri.ForTcp(endpoint.Address.ToString(), endpoint.Port, exportName);
    }

    /// <summary>Serves one connection over a stream the caller opened; the server owns and closes it.</summary>
    /// <param name="stream">A connected, bidirectional stream.</param>
    /// <param name="cancellationToken">Closes the connection.</param>
    /// <returns>A task that completes when the connection has ended (it does not fail).</returns>
    /// <exception cref="InvalidOperationException">The server is stopped or full.</exception>
    public async Task ServeAsync(Stream stream, CancellationToken cancellationToken = default)
    {
        var session = StartSession(() => stream, "stream", cancellationToken);
        if (session is null)
        {
            await stream.DisposeAsync();
            throw new InvalidOperationException("the NBD server is stopped or at its connection limit");
        }

        await session;
    }

    /// <summary>Opens a connection inside the process: a socket pair whose far end the server serves.</summary>
    /// <param name="cancellationToken">Not used: the connection opens at once.</param>
    /// <returns>The client's end. Usable as an <see cref="Client.NbdStreamFactory"/>.</returns>
    /// <exception cref="NbdConnectionException">The server is stopped or full (as a socket would refuse the connection).</exception>
    public async ValueTask<Stream> ConnectInProcessAsync(CancellationToken cancellationToken = default)
    {
        var (client, server) = SocketPair.Create();
        if (StartSession(() => server, "in-process", CancellationToken.None) is null)
        {
            await server.DisposeAsync();
            await client.DisposeAsync();
            throw new NbdConnectionException("the in-process NBD server is stopped or at its connection limit");
        }

        return client;
    }

    /// <summary>Stops listening, closes every connection and waits for them to end.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes when everything is closed.</returns>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        Task[] sessions;
        Listener[] listeners;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _stopped = true;
            sessions = [.. _sessions.Values];
            listeners = [.. _listeners];
            _listeners.Clear();
        }

        await _stopping.CancelAsync();
        foreach (var listener in listeners)
        {
            listener.Socket.Dispose();
        }

        await Task.WhenAll(listeners.Select(l => l.Loop)).WaitAsync(cancellationToken);
        await Task.WhenAll(sessions).WaitAsync(cancellationToken);
        foreach (var listener in listeners)
        {
            if (listener.UnixPath is { } path)
            {
                File.Delete(path);
            }
        }

        if (listeners.Length > 0 || sessions.Length > 0)
        {
            LogStopped(_logger, sessions.Length);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        _stopping.Dispose();
    }

    private void Start(Socket socket, string endpoint, string? unixPath)
    {
        lock (_lock)
        {
            if (_stopped)
            {
                socket.Dispose();
                throw new InvalidOperationException("the NBD server is stopped");
            }

            _listeners.Add(new Listener(socket, AcceptLoopAsync(socket, endpoint), unixPath));
        }

        LogListening(_logger, endpoint);
    }

    private async Task AcceptLoopAsync(Socket listener, string endpoint)
    {
        await Task.Yield();
        var cancellationToken = _stopping.Token;
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(cancellationToken);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException || cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of descriptors and the like: wait a little instead of spinning.
                LogAcceptFailed(_logger, endpoint, e);
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(100), Options.TimeProvider, cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            if (socket.AddressFamily != AddressFamily.Unix)
            {
                socket.NoDelay = true;
            }

            var peer = socket.RemoteEndPoint?.ToString() is { Length: > 0 } remote ? remote : endpoint;
            if (StartSession(() => new NetworkStream(socket, ownsSocket: true), peer, CancellationToken.None) is null)
            {
                socket.Dispose();
            }
        }
    }

    // Opens the stream and runs the session, or returns null when refused (the caller then closes what it has).
    private Task? StartSession(Func<Stream> open, string peer, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var reason = _stopped ? "the server is stopping" : _sessions.Count >= Options.MaxConnections ? $"the limit of {Options.MaxConnections} connections is reached" : null;
            if (reason is null)
            {
                var id = ++_nextId;
                Interlocked.Increment(ref _totalConnections);
                var connection = new NbdServerConnection(this, Options, open(), id, peer, _stopping.Token, cancellationToken);
                var task = RunSessionAsync(connection);
                _sessions.Add(id, task);
                return task;
            }

            LogRefused(_logger, peer, reason);
        }

        return null;
    }

    private async Task RunSessionAsync(NbdServerConnection connection)
    {
        // Yield so the caller registers the session (under the lock) before it can end.
        await Task.Yield();
        try
        {
            await connection.RunAsync();
        }
        finally
        {
            connection.Dispose();
            lock (_lock)
            {
                _sessions.Remove(connection.Id);
            }
        }
    }

    private sealed record Listener(Socket Socket, Task Loop, string? UnixPath);
}
