using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Drydock.TestKit;

/// <summary>Where a fixture's server listens.</summary>
public enum ServerTransport
{
    /// <summary>A Unix-domain socket in the fixture's private directory.</summary>
    Unix = 0,

    /// <summary>TCP on 127.0.0.1, on a free port.</summary>
    Tcp = 1,
}

/// <summary>A service did not start, or did not become ready in time; the message carries its output.</summary>
public sealed class ServiceStartException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ServiceStartException(string message)
        : base(message)
    {
    }
}

/// <summary>Readiness checks and free ports for the service fixtures.</summary>
public static class Readiness
{
    /// <summary>How long a service gets to become ready unless a fixture says otherwise.</summary>
    public static TimeSpan DefaultTimeout { get; } = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(20);

    /// <summary>A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a bind race).</summary>
    public static int FreeTcpPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Whether a service's standard error says its port was taken (another test won the race).</summary>
    public static bool IsAddressInUse(string standardError) =>
        standardError.Contains("Address already in use", StringComparison.OrdinalIgnoreCase)
        || standardError.Contains("EADDRINUSE", StringComparison.Ordinal);

    /// <summary>
    /// Waits until <paramref name="pidFile"/> holds a process id, failing early (with the process's output)
    /// if <paramref name="process"/> exits first.
    /// </summary>
    /// <returns>The process id in the file.</returns>
    public static async Task<int> WaitForPidFileAsync(ManagedProcess process, string pidFile, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (File.Exists(pidFile))
            {
                var text = await File.ReadAllTextAsync(pidFile, Encoding.ASCII, cancellationToken);
                if (text.EndsWith('\n') && int.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                {
                    return pid;
                }
            }

            ThrowIfExited(process);
            ThrowIfTimedOut(process, stopwatch, timeout, $"pid file {pidFile}");
            await Task.Delay(PollInterval, cancellationToken);
        }
    }

    /// <summary>Waits until a Unix-domain socket accepts a connection (closed again at once).</summary>
    public static async Task WaitForUnixSocketAsync(ManagedProcess process, string socketPath, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            if (await UnixSocketAnswersAsync(socketPath, cancellationToken))
            {
                return;
            }

            ThrowIfExited(process);
            ThrowIfTimedOut(process, stopwatch, timeout, $"Unix socket {socketPath}");
            await Task.Delay(PollInterval, cancellationToken);
        }
    }

    /// <summary>Waits until the server listens where it was told to: on <paramref name="socketPath"/> when given, else on
    /// 127.0.0.1:<paramref name="port"/>.</summary>
    public static Task WaitForListenerAsync(ManagedProcess process, string? socketPath, int? port, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        socketPath is not null
            ? WaitForUnixSocketAsync(process, socketPath, timeout, cancellationToken)
            : WaitForTcpPortAsync(process, port ?? throw new ArgumentException("a Unix socket or a TCP port is required", nameof(port)), timeout, cancellationToken);

    /// <summary>Whether a Unix-domain socket exists and accepts a connection now (a socket file left by a dead server does not).</summary>
    internal static async Task<bool> UnixSocketAnswersAsync(string socketPath, CancellationToken cancellationToken) =>
        File.Exists(socketPath) && await CanConnectAsync(new UnixDomainSocketEndPoint(socketPath), ProtocolType.Unspecified, cancellationToken);

    /// <summary>Waits until 127.0.0.1:<paramref name="port"/> accepts a connection (closed again at once).</summary>
    public static async Task WaitForTcpPortAsync(ManagedProcess process, int port, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            if (await CanConnectAsync(new IPEndPoint(IPAddress.Loopback, port), ProtocolType.Tcp, cancellationToken))
            {
                return;
            }

            ThrowIfExited(process);
            ThrowIfTimedOut(process, stopwatch, timeout, string.Create(CultureInfo.InvariantCulture, $"TCP port {port}"));
            await Task.Delay(PollInterval, cancellationToken);
        }
    }

    internal static void ThrowIfExited(ManagedProcess process)
    {
        if (process.HasExited)
        {
            throw new ServiceStartException(string.Create(CultureInfo.InvariantCulture,
                $"{process.Name} exited with code {process.ExitCode} before it was ready: {process.CommandLine}\n{process.DescribeOutput()}"));
        }
    }

    private static void ThrowIfTimedOut(ManagedProcess process, Stopwatch stopwatch, TimeSpan timeout, string what)
    {
        if (stopwatch.Elapsed > timeout)
        {
            throw new ServiceStartException(string.Create(CultureInfo.InvariantCulture,
                $"{process.Name} (pid {process.Id}) did not make {what} ready within {timeout.TotalSeconds:0.#} s: {process.CommandLine}\n{process.DescribeOutput()}"));
        }
    }

    private static async Task<bool> CanConnectAsync(EndPoint endPoint, ProtocolType protocol, CancellationToken cancellationToken)
    {
        using var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, protocol);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            await socket.ConnectAsync(endPoint, attempt.Token);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
