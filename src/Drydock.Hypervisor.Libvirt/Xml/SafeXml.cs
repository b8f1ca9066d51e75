using System.Xml;
using System.Xml.Linq;

namespace Drydock.Hypervisor.Libvirt.Xml;

/// <summary>Loads XML from libvirt without DTDs or entity expansion, with a size cap.</summary>
internal static class SafeXml
{
    /// <summary>Largest document accepted.</summary>
    public const int MaxLength = 8 * 1024 * 1024;

    /// <summary>Parses <paramref name="xml"/>, expecting root element <paramref name="root"/>.</summary>
    /// <exception cref="FormatException">Too large, not well-formed, or another root.</exception>
    public static XElement Load(string xml, string root)
    {
        if (xml.Length > MaxLength)
        {
            throw new FormatException($"<{root}> XML is {xml.Length} characters, over the {MaxLength} limit.");
        }

        XElement element;
        try
        {
            var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, MaxCharactersFromEntities = 0 };
            using var text = new StringReader(xml);
            using var reader = XmlReader.Create(text, settings);
            element = XElement.Load(reader);
        }
        catch (XmlException ex)
        {
            throw new FormatException($"<{root}> XML is not well-formed: {ex.Message}", ex);
        }

        return element.Name.LocalName == root
            ? element
            : throw new FormatException($"Expected <{root}>, got <{element.Name}>.");
    }
}
