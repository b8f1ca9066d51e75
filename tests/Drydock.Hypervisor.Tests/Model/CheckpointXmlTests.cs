using Xunit;

namespace Drydock.Hypervisor.Tests.Model;

public sealed class CheckpointXmlTests
{
    // The example of libvirt's formatcheckpoint documentation, with the embedded domain XML shortened.
    private const string LibvirtExample = """
        <domaincheckpoint>
          <description>Completion of updates after OS install</description>
          <disks>
            <disk name='vda' checkpoint='bitmap'/>
            <disk name='vdb' checkpoint='no'/>
          </disks>
          <name>1525889631</name>
          <creationTime>1525889631</creationTime>
          <parent><name>1525111885</name></parent>
          <domain type='qemu'><name>fedora</name></domain>
        </domaincheckpoint>
        """;

    [Fact]
    public void Parses_libvirts_documented_example_and_names_the_bitmap_after_the_checkpoint()
    {
        var document = CheckpointXml.Parse(LibvirtExample);

        Assert.Equal("1525889631", document.Name);
        Assert.Equal("Completion of updates after OS install", document.Description);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1525889631), document.CreationTime);
        Assert.Equal("1525111885", document.Parent);
        Assert.Equal([new CheckpointDocumentDisk("vda", "1525889631"), new CheckpointDocumentDisk("vdb", null)], document.Disks);
        Assert.Equal([new CheckpointDisk("vda", "1525889631")], document.BitmapDisks);
    }

    [Fact]
    public void Format_then_parse_round_trips()
    {
        var document = new CheckpointDocument
        {
            Name = "drydock-20250102T030405Z-0a1b2c3d",
            Description = "drydock <&> test",
            CreationTime = DateTimeOffset.FromUnixTimeSeconds(1735787045),
            Parent = "drydock-20250101T000000Z-00000000",
            Disks = [new("vda", "drydock-20250102T030405Z-0a1b2c3d"), new("vdb", null)],
        };

        var parsed = CheckpointXml.Parse(CheckpointXml.Format(document));

        Assert.Equal(document.Name, parsed.Name);
        Assert.Equal(document.Description, parsed.Description);
        Assert.Equal(document.CreationTime, parsed.CreationTime);
        Assert.Equal(document.Parent, parsed.Parent);
        Assert.Equal(document.Disks, parsed.Disks);
    }

    [Theory]
    [InlineData("<domainsnapshot><name>x</name></domainsnapshot>", "expected <domaincheckpoint>")]
    [InlineData("<domaincheckpoint><description>no name</description></domaincheckpoint>", "no <name>")]
    [InlineData("<domaincheckpoint><name>a</name><name>b</name></domaincheckpoint>", "more than one <name>")]
    [InlineData("<domaincheckpoint><name>a</name><creationTime>-5</creationTime></domaincheckpoint>", "invalid <creationTime>")]
    [InlineData("<domaincheckpoint><name>a</name><disks><disk name='vda'/><disk name='vda'/></disks></domaincheckpoint>", "twice")]
    [InlineData("<domaincheckpoint><name>a</name><disks><disk name='vda' checkpoint='maybe'/></disks></domaincheckpoint>", "checkpoint='maybe'")]
    [InlineData("<domaincheckpoint><name>a</name><disks><disk checkpoint='no'/></disks></domaincheckpoint>", "without a name")]
    [InlineData("<domaincheckpoint><name>a</name>", "not well-formed")]
    public void Rejects_malformed_documents_with_a_reason(string xml, string reason)
    {
        var ex = Assert.Throws<FormatException>(() => CheckpointXml.Parse(xml));
        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Rejects_a_document_type_definition()
    {
        // Entity expansion in saved XML must never be processed.
        const string xml = "<!DOCTYPE d [<!ENTITY e \"boom\">]><domaincheckpoint><name>&e;</name></domaincheckpoint>";
        Assert.Throws<FormatException>(() => CheckpointXml.Parse(xml));
    }
}
