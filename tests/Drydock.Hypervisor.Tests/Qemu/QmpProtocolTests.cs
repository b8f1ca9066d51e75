using System.Buffers;
using System.Text;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Qmp;
using Xunit;

namespace Drydock.Hypervisor.Tests.Qemu;

public sealed class QmpProtocolTests
{
    private static QmpMessage Parse(string line) => QmpProtocol.Parse(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(line)));

    [Fact]
    public void Reads_crlf_lines_one_at_a_time_and_keeps_a_partial_tail()
    {
        var buffer = new ReadOnlySequence<byte>("{\"return\": {}, \"id\": \"a\"}\r\n{\"event\": \"X\"}\r\n{\"ret"u8.ToArray());

        Assert.True(QmpProtocol.TryReadLine(ref buffer, out var first));
        Assert.Equal("{\"return\": {}, \"id\": \"a\"}", Encoding.UTF8.GetString(first));
        Assert.True(QmpProtocol.TryReadLine(ref buffer, out var second));
        Assert.Equal("{\"event\": \"X\"}", Encoding.UTF8.GetString(second));
        Assert.False(QmpProtocol.TryReadLine(ref buffer, out _));
        Assert.Equal("{\"ret", Encoding.UTF8.GetString(buffer));
    }

    [Fact]
    public void Classifies_greeting_reply_error_and_event()
    {
        var greeting = Parse("""{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}""");
        Assert.Equal(QmpMessageKind.Greeting, greeting.Kind);
        Assert.Equal(7, greeting.Payload.GetProperty("version").GetProperty("qemu").GetProperty("major").GetInt32());

        var reply = Parse("""{"return": [{"id": "e1"}], "id": "dd-7"}""");
        Assert.Equal((QmpMessageKind.Return, "dd-7"), (reply.Kind, reply.Id));
        Assert.Equal("e1", reply.Payload[0].GetProperty("id").GetString());

        var error = Parse("""{"id": "dd-8", "error": {"class": "GenericError", "desc": "Bitmap already exists: drydock-1"}}""");
        Assert.Equal((QmpMessageKind.Error, "dd-8", "GenericError", "Bitmap already exists: drydock-1"), (error.Kind, error.Id, error.ErrorClass, error.ErrorDescription));

        var ev = Parse("""{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "BLOCK_EXPORT_DELETED", "data": {"id": "ddcap-0a1b2c3d-0"}}""");
        Assert.Equal(QmpMessageKind.Event, ev.Kind);
        Assert.Equal("BLOCK_EXPORT_DELETED", ev.EventName);
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_250), ev.Timestamp);
        Assert.Equal("ddcap-0a1b2c3d-0", new QmpEvent(ev.EventName!, ev.Payload, ev.Timestamp).DataString("id"));
    }

    [Fact]
    public void An_event_without_data_gets_an_empty_object_and_a_bad_timestamp_is_dropped()
    {
        var ev = Parse("""{"event": "STOP", "timestamp": {"seconds": -1, "microseconds": 0}}""");
        Assert.Equal(System.Text.Json.JsonValueKind.Object, ev.Payload.ValueKind);
        Assert.Null(ev.Timestamp);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[1, 2]")]
    [InlineData("{\"something\": 1}")]
    [InlineData("{\"error\": \"text\"}")]
    [InlineData("{\"event\": 5}")]
    public void Rejects_what_is_no_qmp_message(string line) =>
        Assert.Throws<QmpProtocolException>(() => Parse(line));

    [Fact]
    public void Formats_a_command_as_one_line_with_arguments_and_id()
    {
        var bytes = QmpProtocol.FormatCommand("block-dirty-bitmap-add", "dd-1", new JsonObject { ["node"] = "fmt-vda", ["name"] = "drydock-x" });
        var text = Encoding.UTF8.GetString(bytes);

        Assert.EndsWith("\n", text, StringComparison.Ordinal);
        Assert.Equal(1, text.Count(c => c == '\n'));
        var parsed = JsonNode.Parse(text)!;
        Assert.Equal("block-dirty-bitmap-add", parsed["execute"]!.GetValue<string>());
        Assert.Equal("dd-1", parsed["id"]!.GetValue<string>());
        Assert.Equal("fmt-vda", parsed["arguments"]!["node"]!.GetValue<string>());
    }

    [Fact]
    public void Merge_without_a_source_is_refused_before_it_reaches_qemu()
    {
        // QEMU 7.2 aborts on block-dirty-bitmap-merge with an empty list.
        Assert.Throws<ArgumentException>(() => QmpCommands.BitmapMerge("fmt-vda", "t", []));
    }
}
