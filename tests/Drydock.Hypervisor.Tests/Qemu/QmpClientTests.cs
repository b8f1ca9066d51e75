using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Qmp;
using Xunit;

namespace Drydock.Hypervisor.Tests.Qemu;

/// <summary>The QMP client against a scripted server on a Unix socket.</summary>
public sealed class QmpClientTests
{
    private const string Greeting = """{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}""";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Replies_are_matched_by_id_out_of_order_and_events_in_between_reach_subscribers()
    {
        await using var server = await FakeQmp.StartAsync();
        var connecting = QmpClient.ConnectAsync(server.Path, cancellationToken: Ct);
        await server.AcceptAsync(Greeting);
        var capabilities = await server.ReadCommandAsync();
        Assert.Equal("qmp_capabilities", capabilities["execute"]!.GetValue<string>());
        await server.SendAsync($$"""{"return": {}, "id": "{{capabilities["id"]}}"}""");
        await using var client = await connecting;
        Assert.Equal(new Version(7, 2, 22), client.QemuVersion);
        using var events = client.SubscribeEvents(e => e.Name == "JOB_STATUS_CHANGE");

        var first = client.ExecuteAsync("query-a", cancellationToken: Ct);
        var second = client.ExecuteAsync("query-b", new JsonObject { ["x"] = 1 }, Ct);
        var a = await server.ReadCommandAsync();
        var b = await server.ReadCommandAsync();
        Assert.Equal(1, b["arguments"]!["x"]!.GetValue<int>());
        await server.SendAsync($$"""{"return": "b", "id": "{{b["id"]}}"}""");
        await server.SendAsync("""{"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "created"}, "timestamp": {"seconds": 1, "microseconds": 2}}""");
        await server.SendAsync("");
        await server.SendAsync("""{"event": "OTHER", "data": {}}""");
        await server.SendAsync($$"""{"return": "a", "id": "{{a["id"]}}"}""");

        Assert.Equal("a", (await first).GetString());
        Assert.Equal("b", (await second).GetString());
        var received = await events.WaitAsync(_ => true, TimeSpan.FromSeconds(30), Ct);
        Assert.Equal(("JOB_STATUS_CHANGE", "created"), (received.Name, received.DataString("status")));
    }

    [Fact]
    public async Task An_error_reply_keeps_qemus_class_and_description()
    {
        await using var server = await FakeQmp.StartAsync();
        await using var client = await server.ConnectAsync();
        var call = client.ExecuteAsync("block-dirty-bitmap-add", cancellationToken: Ct);
        var command = await server.ReadCommandAsync();
        await server.SendAsync($$$"""{"id": "{{{command["id"]}}}", "error": {"class": "GenericError", "desc": "Bitmap already exists: b"}}""");

        var error = await Assert.ThrowsAsync<QmpException>(() => call);
        Assert.Equal(("block-dirty-bitmap-add", "GenericError", "Bitmap already exists: b"), (error.Command, error.ErrorClass, error.Description));
        Assert.Contains(server.Path, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_server_closing_fails_commands_in_flight_and_ends_subscriptions()
    {
        await using var server = await FakeQmp.StartAsync();
        await using var client = await server.ConnectAsync();
        using var events = client.SubscribeEvents();
        var call = client.ExecuteAsync("query-x", cancellationToken: Ct);
        await server.ReadCommandAsync();
        server.CloseConnection();

        await Assert.ThrowsAsync<QmpConnectionException>(() => call);
        Assert.NotNull(await client.Closed);
        await Assert.ThrowsAsync<QmpConnectionException>(() => events.WaitAsync(_ => true, TimeSpan.FromSeconds(30), Ct));
        await Assert.ThrowsAsync<QmpConnectionException>(() => client.ExecuteAsync("query-y", cancellationToken: Ct));
    }

    [Fact]
    public async Task Commands_racing_disposal_fail_as_a_closed_connection_not_as_a_disposed_object()
    {
        await using var server = await FakeQmp.StartAsync();
        var client = await server.ConnectAsync();

        // The server reads nothing, so these large commands fill the socket: one is stuck sending while holding the
        // write lock, the rest wait for it, when the client is disposed under them.
        var payload = new string('x', 256 * 1024);
        var calls = Enumerable.Range(0, 16)
            .Select(i => Task.Run(() => client.ExecuteAsync("query-" + i, new JsonObject { ["data"] = payload }, Ct), Ct))
            .ToList();
        await Task.Delay(TimeSpan.FromMilliseconds(200), Ct);
        await client.DisposeAsync();

        foreach (var call in calls)
        {
            await Assert.ThrowsAsync<QmpConnectionException>(() => call);
        }

        await Assert.ThrowsAsync<QmpConnectionException>(() => client.ExecuteAsync("query-after", cancellationToken: Ct));
    }

    [Fact]
    public async Task A_line_that_is_not_qmp_closes_the_connection_as_a_protocol_error()
    {
        await using var server = await FakeQmp.StartAsync();
        await using var client = await server.ConnectAsync();
        var call = client.ExecuteAsync("query-x", cancellationToken: Ct);
        await server.ReadCommandAsync();
        await server.SendAsync("this is not json");

        await Assert.ThrowsAsync<QmpConnectionException>(() => call);
        Assert.IsType<QmpProtocolException>(await client.Closed);
    }

    [Fact]
    public async Task A_command_without_reply_times_out_naming_the_command()
    {
        await using var server = await FakeQmp.StartAsync();
        await using var client = await server.ConnectAsync(new QmpClientOptions { CommandTimeout = TimeSpan.FromMilliseconds(200) });
        var error = await Assert.ThrowsAsync<TimeoutException>(() => client.ExecuteAsync("query-slow", cancellationToken: Ct));
        Assert.Contains("query-slow", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Nothing_listening_is_a_connection_error_naming_the_socket()
    {
        var path = Path.Combine(Path.GetTempPath(), "drydock-no-qmp-" + Guid.NewGuid().ToString("N")[..8] + ".sock");
        var error = await Assert.ThrowsAsync<QmpConnectionException>(() => QmpClient.ConnectAsync(path, cancellationToken: Ct));
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        Assert.Contains("no such socket", error.Message, StringComparison.Ordinal); // at once, not after the connect timeout
    }

    /// <summary>A QMP server that does what the test says, one line at a time.</summary>
    private sealed class FakeQmp : IAsyncDisposable
    {
        private readonly Socket _listener;
        private readonly string _directory;
        private Socket? _connection;
        private StreamReader? _reader;

        private FakeQmp(Socket listener, string directory, string path)
        {
            _listener = listener;
            _directory = directory;
            Path = path;
        }

        public string Path { get; }

        public static Task<FakeQmp> StartAsync()
        {
            var directory = Directory.CreateTempSubdirectory("drydock-fakeqmp-").FullName;
            var path = System.IO.Path.Combine(directory, "qmp.sock");
            var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);
            return Task.FromResult(new FakeQmp(listener, directory, path));
        }

        public async Task<QmpClient> ConnectAsync(QmpClientOptions? options = null)
        {
            var connecting = QmpClient.ConnectAsync(Path, options, Ct);
            await AcceptAsync(Greeting);
            var capabilities = await ReadCommandAsync();
            await SendAsync($$"""{"return": {}, "id": "{{capabilities["id"]}}"}""");
            return await connecting;
        }

        public async Task AcceptAsync(string greeting)
        {
            _connection = await _listener.AcceptAsync(Ct);
            _reader = new StreamReader(new NetworkStream(_connection, ownsSocket: false), Encoding.UTF8);
            await SendAsync(greeting);
        }

        public async Task<JsonNode> ReadCommandAsync() => JsonNode.Parse(await _reader!.ReadLineAsync(Ct) ?? throw new IOException("client closed"))!;

        public async Task SendAsync(string line) => await _connection!.SendAsync(Encoding.UTF8.GetBytes(line + "\r\n"), SocketFlags.None, Ct);

        public void CloseConnection() => _connection!.Shutdown(SocketShutdown.Both);

        public ValueTask DisposeAsync()
        {
            _reader?.Dispose();
            _connection?.Dispose();
            _listener.Dispose();
            Directory.Delete(_directory, recursive: true);
            return ValueTask.CompletedTask;
        }
    }
}
